"""The GR00T bridge against a real ZeroMQ server that speaks GR00T's documented protocol."""

import io
import threading

import msgpack
import numpy as np
import pytest
import zmq
from rclpy.parameter import Parameter
from sage_bringup.groot import GrootClient, GrootError, observation, TASK_KEY
from sage_bringup.groot_node import GrootNode
from sage_core.image_conv import numpy_to_image
from sage_core.ros_common import qos_from_name
from sage_core.testing import Graph
from sage_msgs.msg import Feature
from sensor_msgs.msg import Image
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory


def _decode(obj):          # written from the protocol, independently of the client
    if '__ndarray_class__' in obj:
        return np.load(io.BytesIO(obj['as_npy']), allow_pickle=False)
    return obj


def _encode(obj):
    buf = io.BytesIO()
    np.save(buf, obj, allow_pickle=False)
    return {'__ndarray_class__': True, 'as_npy': buf.getvalue()}


@pytest.fixture
def server():
    """A GR00T-style REP server: the arm chunk encodes what it received."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REP)
    port = sock.bind_to_random_port('tcp://127.0.0.1')
    seen, stop = [], threading.Event()

    def serve():
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        while not stop.is_set():
            if not poller.poll(50):
                continue
            request = msgpack.unpackb(sock.recv(), object_hook=_decode, raw=False)
            seen.append(request)
            if request['endpoint'] == 'ping':
                answer = {'status': 'ok'}
            elif request['endpoint'] != 'get_action':
                answer = {'error': f'unknown endpoint {request["endpoint"]}'}
            else:
                video = request['data']['video.ego_view']
                brightness = float(video.mean()) / 255.0
                answer = {'action.arm': np.full((16, 7), brightness),
                          'action.base': np.tile([0.3, -0.5], (16, 1))}
            sock.send(msgpack.packb(answer, default=_encode, use_bin_type=True))
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, seen
    stop.set()
    thread.join(2)
    sock.close(0)


def test_client_speaks_the_wire_format(server):
    port, seen = server
    client = GrootClient(port=port, timeout_s=2.0)
    assert client.call('ping') == {'status': 'ok'}
    image = np.full((48, 64, 3), 51, np.uint8)
    actions = client.get_action(observation({'ego_view': image}, {'arm': np.zeros(7)},
                                            'pick up the cube'))
    request = seen[-1]
    assert request['endpoint'] == 'get_action'
    assert request['data']['video.ego_view'].shape == (1, 48, 64, 3)
    assert request['data']['video.ego_view'].dtype == np.uint8
    assert request['data']['state.arm'].shape == (1, 7)
    assert request['data'][TASK_KEY] == ['pick up the cube']
    assert actions['action.arm'].shape == (16, 7) and actions['action.arm'][0, 0] == 0.2
    with pytest.raises(GrootError, match='unknown endpoint'):
        client.call('teleport')
    client.close()


def test_no_server_is_a_clear_error_and_the_client_recovers(server):
    port, _ = server
    dead = GrootClient(port=1, timeout_s=0.3)
    with pytest.raises(GrootError, match='no answer'):
        dead.call('ping')
    with pytest.raises(GrootError):        # the socket was renewed, not left stuck
        dead.call('ping')
    assert GrootClient(port=port, timeout_s=2.0).call('ping') == {'status': 'ok'}


def test_node_publishes_chunks_and_a_cognition_feature(server):
    port, seen = server
    with Graph() as g:
        g.add(GrootNode(context=g.context, parameter_overrides=[
            Parameter('port', value=port), Parameter('rate_hz', value=10.0)]))
        chunks = g.collect(JointTrajectory, 'groot/action_chunk')
        features = g.collect(Feature, 'sage/features/cognition_groot')
        g.publisher(String, 'sage/instruction', qos_from_name('LATCHED')).publish(
            String(data='pick up the cube'))
        camera = g.publisher(Image,
                             'camera/image_raw', qos_from_name('SENSOR_DATA'))

        def sent():
            camera.publish(numpy_to_image(np.full((48, 64, 3), 102, np.uint8), 'rgb8'))
            return chunks and features
        assert g.wait_for(sent, 15), 'no answer published'
        traj = chunks[-1]
        assert len(traj.points) == 16 and len(traj.joint_names) == 9
        assert traj.joint_names[0] == 'action.arm/0'
        assert abs(traj.points[0].positions[0] - 0.4) < 1e-6          # 102 / 255
        f = features[-1]
        assert f.trust == 1.0 and len(f.data) == 32 and abs(f.data[0] - 0.4) < 1e-6
        assert any(r['data'].get(TASK_KEY) == ['pick up the cube'] for r in seen
                   if r['endpoint'] == 'get_action')


def test_node_as_a_teacher_labels_sage_steps(server):
    from sage_msgs.msg import Action
    port, _ = server
    with Graph() as g:
        g.add(GrootNode(context=g.context, parameter_overrides=[
            Parameter('port', value=port), Parameter('rate_hz', value=10.0),
            Parameter('role', value='teacher')]))
        labels = g.collect(Action, 'sage/teacher_action')
        camera = g.publisher(Image, 'camera/image_raw', qos_from_name('SENSOR_DATA'))

        def labelled():
            camera.publish(numpy_to_image(np.zeros((8, 8, 3), np.uint8), 'rgb8'))
            return labels
        assert g.wait_for(labelled, 15)
        assert list(labels[-1].continuous) == pytest.approx([0.3, -0.5])
        assert labels[-1].source == 'groot'
