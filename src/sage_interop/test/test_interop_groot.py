"""The GR00T bridge against a real ZeroMQ server that speaks GR00T's documented protocol.

The server is written here from Isaac-GR00T's code, independently of the client:
msgpack requests {"endpoint", "data"[, "api_token"]}, numpy arrays as
{"__ndarray_class__": True, "as_npy": np.save bytes}, errors as {"error": text};
N1.6 (gr00t/policy/server_client.py PolicyServer) calls handler(**data) and
answers get_action with [action, info]; N1.5 (gr00t/eval/service.py) calls
handler(data) and answers the action dict.
"""

import io
import threading

import msgpack
import numpy as np
import pytest
import zmq
from rclpy.parameter import Parameter
from sage_interop.groot import GrootClient, GrootError, observation, TASK_KEY
from sage_interop.groot_node import GrootNode
from sage_ros.image_conv import numpy_to_image
from sage_ros.common import qos_from_name
from sage_testing.graph import Graph
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


def _n16_get_action(observation, options=None):
    video = observation['video']['ego_view']                 # B×T×H×W×3
    assert video.ndim == 5 and video.dtype == np.uint8
    assert isinstance(observation['language']['task'][0][0], str)
    brightness = float(video.mean()) / 255.0
    action = {'arm': np.full((1, 16, 7), brightness, np.float32),
              'base': np.tile(np.float32([0.3, -0.5]), (1, 16, 1))}
    return action, {}


def _n15_get_action(data):
    brightness = float(data['video.ego_view'].mean()) / 255.0
    return {'action.arm': np.full((16, 7), brightness),
            'action.base': np.tile([0.3, -0.5], (16, 1))}


@pytest.fixture(params=['n1.6', 'n1.5'])
def server(request):
    """A GR00T REP server of either generation: the arm chunk encodes what it received."""
    protocol = request.param
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
            try:
                if request['endpoint'] == 'ping':
                    answer = {'status': 'ok', 'message': 'Server is running'}
                elif request['endpoint'] != 'get_action':
                    raise ValueError(f'Unknown endpoint: {request["endpoint"]}')
                elif protocol == 'n1.6':
                    answer = list(_n16_get_action(**request.get('data', {})))
                else:
                    answer = _n15_get_action(request.get('data', {}))
            except Exception as exc:                    # as GR00T's servers answer errors
                answer = {'error': str(exc)}
            sock.send(msgpack.packb(answer, default=_encode))
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, seen, protocol
    stop.set()
    thread.join(2)
    sock.close(0)


def test_client_speaks_the_wire_format(server):
    port, seen, protocol = server
    client = GrootClient(port=port, timeout_s=2.0, protocol=protocol)
    assert client.call('ping')['status'] == 'ok'
    image = np.full((48, 64, 3), 51, np.uint8)
    actions = client.get_action(observation({'ego_view': image}, {'arm': np.zeros(7)},
                                            'pick up the cube', protocol=protocol))
    request = seen[-1]
    assert request['endpoint'] == 'get_action'
    if protocol == 'n1.6':
        obs = request['data']['observation']
        assert set(request['data']) == {'observation', 'options'}
        assert obs['video']['ego_view'].shape == (1, 1, 48, 64, 3)
        assert obs['video']['ego_view'].dtype == np.uint8
        assert obs['state']['arm'].shape == (1, 1, 7) and obs['state']['arm'].dtype == np.float32
        assert obs['language'] == {'task': [['pick up the cube']]}
    else:
        assert request['data']['video.ego_view'].shape == (1, 48, 64, 3)
        assert request['data']['video.ego_view'].dtype == np.uint8
        assert request['data']['state.arm'].shape == (1, 7)
        assert request['data'][TASK_KEY] == ['pick up the cube']
    assert set(actions) == {'action.arm', 'action.base'}
    assert actions['action.arm'].shape == (16, 7)
    assert actions['action.arm'][0, 0] == pytest.approx(0.2)
    with pytest.raises(GrootError, match='Unknown endpoint'):
        client.call('teleport')
    client.close()


def test_the_wrong_generation_is_a_clear_error(server):
    port, _, protocol = server
    other = 'n1.5' if protocol == 'n1.6' else 'n1.6'
    client = GrootClient(port=port, timeout_s=2.0, protocol=other)
    with pytest.raises(GrootError):
        client.get_action(observation({'ego_view': np.zeros((8, 8, 3), np.uint8)}, {},
                                      'wave', protocol=other))
    client.close()


def test_no_server_is_a_clear_error_and_the_client_recovers(server):
    port, _, protocol = server
    dead = GrootClient(port=1, timeout_s=0.3)
    with pytest.raises(GrootError, match='no answer'):
        dead.call('ping')
    with pytest.raises(GrootError):        # the socket was renewed, not left stuck
        dead.call('ping')
    assert GrootClient(port=port, timeout_s=2.0).call('ping')['status'] == 'ok'


def test_node_publishes_chunks_and_a_cognition_feature(server):
    port, seen, protocol = server
    with Graph() as g:
        g.add(GrootNode(context=g.context, parameter_overrides=[
            Parameter('port', value=port), Parameter('rate_hz', value=10.0),
            Parameter('protocol', value=protocol)]))
        chunks = g.collect(JointTrajectory, 'groot/action_chunk')
        features = g.collect(Feature, 'sage/features/cognition_groot')
        g.publisher(String, 'sage/instruction', qos_from_name('LATCHED')).publish(
            String(data='pick up the cube'))
        camera = g.publisher(Image,
                             'camera/image_raw', qos_from_name('SENSOR_DATA'))

        def sent():
            camera.publish(numpy_to_image(np.full((48, 64, 3), 102, np.uint8), 'rgb8'))
            # a request that timed out on a loaded machine publishes trust 0: wait for a good one
            return chunks and any(f.trust == 1.0 for f in features)
        assert g.wait_for(sent, 15), 'no answer published'
        traj = chunks[-1]
        assert len(traj.points) == 16 and len(traj.joint_names) == 9
        assert traj.joint_names[0] == 'action.arm/0'
        assert traj.points[1].time_from_start.nanosec == 50_000_000      # 20 Hz default
        assert abs(traj.points[0].positions[0] - 0.4) < 1e-6          # 102 / 255
        f = [f for f in features if f.trust == 1.0][-1]
        assert len(f.data) == 32 and abs(f.data[0] - 0.4) < 1e-6
        tasks = [r['data']['observation']['language']['task'] if protocol == 'n1.6'
                 else r['data'][TASK_KEY] for r in seen if r['endpoint'] == 'get_action']
        assert ['pick up the cube'] in tasks or [['pick up the cube']] in tasks


def test_node_as_a_teacher_labels_sage_steps(server):
    from sage_msgs.msg import Action
    port, _, protocol = server
    with Graph() as g:
        g.add(GrootNode(context=g.context, parameter_overrides=[
            Parameter('port', value=port), Parameter('rate_hz', value=10.0),
            Parameter('role', value='teacher'), Parameter('protocol', value=protocol),
            Parameter('joint_names', value=[f'panda_joint{i}' for i in range(1, 8)] +
                      ['base_v', 'base_w'])]))
        chunks = g.collect(JointTrajectory, 'groot/action_chunk')
        labels = g.collect(Action, 'sage/teacher_action')
        camera = g.publisher(Image, 'camera/image_raw', qos_from_name('SENSOR_DATA'))

        def labelled():
            camera.publish(numpy_to_image(np.zeros((8, 8, 3), np.uint8), 'rgb8'))
            return labels
        assert g.wait_for(labelled, 15)
        assert list(labels[-1].continuous) == pytest.approx([0.3, -0.5])
        assert labels[-1].source == 'groot'
        assert g.wait_for(lambda: chunks, 5)
        assert chunks[-1].joint_names[0] == 'panda_joint1' and \
            chunks[-1].joint_names[-1] == 'base_w'


def test_node_without_a_server_publishes_zero_trust_and_keeps_running():
    from diagnostic_msgs.msg import DiagnosticArray
    sock = zmq.Context.instance().socket(zmq.REP)
    port = sock.bind_to_random_port('tcp://127.0.0.1')
    sock.close(0)                                  # a port where nobody answers
    with Graph() as g:
        g.add(GrootNode(context=g.context, parameter_overrides=[
            Parameter('port', value=port), Parameter('rate_hz', value=10.0),
            Parameter('timeout_s', value=0.2)]))
        features = g.collect(Feature, 'sage/features/cognition_groot')
        diags = g.collect(DiagnosticArray, 'diagnostics')
        camera = g.publisher(Image, 'camera/image_raw', qos_from_name('SENSOR_DATA'))

        def failed_twice():
            camera.publish(numpy_to_image(np.zeros((8, 8, 3), np.uint8), 'rgb8'))
            return len(features) >= 2
        assert g.wait_for(failed_twice, 15)
        assert all(f.trust == 0.0 for f in features)
        assert g.wait_for(lambda: any('no answer' in s.message for d in diags
                                      for s in d.status), 5)
