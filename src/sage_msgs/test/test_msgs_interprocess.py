"""Every sage_msgs message, service and action crosses a process boundary intact."""

import os
import subprocess
import sys
import time

import pytest
import rclpy
from rclpy.action import ActionClient

sys.path.insert(0, os.path.dirname(__file__))
from msg_fill import fill, message_class  # noqa: E402

MSG_DIR = os.path.join(os.path.dirname(__file__), '..', 'msg')
MESSAGES = sorted(f[:-4] for f in os.listdir(MSG_DIR) if f.endswith('.msg'))


@pytest.fixture(scope='module')
def peer():
    peer_script = os.path.join(os.path.dirname(__file__), 'msg_peer.py')
    proc = subprocess.Popen([sys.executable, peer_script,
                             ','.join(MESSAGES), '60'])
    rclpy.init()
    node = rclpy.create_node('sage_msgs_test')
    yield node
    node.destroy_node()
    rclpy.shutdown()
    proc.terminate()
    proc.wait(timeout=10)


def _spin_until(node, done, timeout=15.0):
    end = time.monotonic() + timeout
    while not done() and time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    return done()


def test_every_message_type_is_covered():
    assert {'Feature', 'FeatureArray', 'Salience', 'Action', 'Coherence', 'AudioChunk',
            'Experience', 'SleepStatus', 'Checkpoint'} <= set(MESSAGES)


@pytest.mark.parametrize('name', MESSAGES)
def test_message_arrives_equal(peer, name):
    cls = message_class(f'sage_msgs/{name}')
    got = []
    sub = peer.create_subscription(cls, f'peer/{name}', got.append, 10)
    try:
        assert _spin_until(peer, lambda: got), f'no {name} from the peer process'
    finally:
        peer.destroy_subscription(sub)
    expected = fill(cls(), seed=len(name))
    assert got[0] == expected
    assert got[0] != cls(), 'the filler must set non-default values'


@pytest.mark.parametrize('srv,request_fields,check', [
    ('Recall', {'query': [1.0, -2.5]},
     lambda r: r.success and list(r.recalled) == [2.0, -5.0] and r.score == 0.75),
    ('Snapshot', {'path': '/tmp/x'}, lambda r: r.success and r.path == '/tmp/x/saved'),
])
def test_services_round_trip(peer, srv, request_fields, check):
    import sage_msgs.srv as srvs
    cls = getattr(srvs, srv)
    client = peer.create_client(cls, f'peer/{srv.lower()}')
    assert client.wait_for_service(timeout_sec=15)
    future = client.call_async(cls.Request(**request_fields))
    assert _spin_until(peer, future.done)
    assert check(future.result())


@pytest.mark.parametrize('action,goal,check', [
    ('Sleep', {'targets': ['coherence', 'lora']},
     lambda r, fb: r.committed and r.message == 'coherence,lora' and fb[0].phase == 'train'),
    ('Think', {'instruction': 'go to red'},
     lambda r, fb: r.text == 'GO TO RED' and fb[0].partial_text == 'th'),
])
def test_actions_round_trip(peer, action, goal, check):
    import sage_msgs.action as actions
    cls = getattr(actions, action)
    client = ActionClient(peer, cls, f'peer/{action.lower()}')
    assert client.wait_for_server(timeout_sec=15)
    feedback = []
    send = client.send_goal_async(cls.Goal(**goal),
                                  feedback_callback=lambda m: feedback.append(m.feedback))
    assert _spin_until(peer, send.done)
    result = send.result().get_result_async()
    assert _spin_until(peer, result.done)
    _spin_until(peer, lambda: feedback, timeout=2.0)
    assert check(result.result().result, feedback)
    client.destroy()
