"""The Foxglove WebSocket protocol's official client (@foxglove/ws-protocol, under Node.js)
against SAGE's Foxglove node: both protocol names connect, see every channel advertised,
receive live messages on each, and cannot publish."""

import json
import os
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest
from rclpy.parameter import Parameter
from sage_msgs.msg import Action, Coherence, Feature, Salience
from sage_ros.common import qos_from_name
from sage_ros.image_conv import numpy_to_image
from sage_testing.graph import Graph
from sage_viz.foxglove_node import FoxgloveNode
from sensor_msgs.msg import Image

CLIENT = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'tests', 'foxglove_client')
FED = {'/sage/coherence', '/sage/trust', '/sage/salience', '/sage/action', '/sage/features',
       '/camera/image'}


def official_client(port: int, subprotocol: str, seconds: float) -> list[dict]:
    out = subprocess.run(['node', 'client.js', str(port), subprotocol, str(seconds)],
                         cwd=CLIENT, capture_output=True, text=True, timeout=seconds + 30)
    assert out.returncode == 0, out.stdout + out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{')]


@pytest.mark.skipif(shutil.which('node') is None or not os.path.isdir(
    os.path.join(CLIENT, 'node_modules', '@foxglove')),
    reason='Node.js and @foxglove/ws-protocol come from scripts/setup.sh (apt nodejs, npm ci)')
@pytest.mark.parametrize('subprotocol', ['foxglove.websocket.v1', 'foxglove.sdk.v1'])
def test_the_official_client_connects_sees_every_channel_and_cannot_publish(subprotocol):
    with Graph() as g:
        node = g.add(FoxgloveNode(context=g.context, parameter_overrides=[
            Parameter('port', value=0)]))
        pubs = {'coh': g.publisher(Coherence, 'sage/coherence'),
                'sal': g.publisher(Salience, 'sage/salience'),
                'act': g.publisher(Action, 'sage/action'),
                'vis': g.publisher(Feature, 'sage/features/vision',
                                   qos_from_name('SENSOR_DATA')),
                'img': g.publisher(Image, 'camera/image_raw', qos_from_name('SENSOR_DATA'))}
        image = numpy_to_image(np.zeros((12, 16, 3), np.uint8), 'rgb8')
        stop = threading.Event()

        def feed():
            while not stop.is_set():
                pubs['coh'].publish(Coherence(score=0.5, modalities=['vision'],
                                              trust_in=[0.9], trust_used=[0.8], age_s=[0.0]))
                pubs['sal'].publish(Salience(total=0.3))
                pubs['act'].publish(Action(discrete_name='forward', continuous=[0.3, 0.0]))
                pubs['vis'].publish(Feature(modality='vision', trust=0.9, data=[0.1, 0.2]))
                pubs['img'].publish(image)
                time.sleep(0.1)
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            events = official_client(node.port, subprotocol, 6)
        finally:
            stop.set()
            feeder.join()
    by = {}
    for e in events:
        by.setdefault(e['event'], []).append(e)
    assert by['open'][0]['protocol'] == subprotocol            # negotiated as offered
    info = by['serverInfo'][0]
    assert info['name'] == 'SAGE' and 'clientPublish' not in info['capabilities']
    advertised = {e['topic'] for e in by['advertise']}
    assert FED | {'/diagnostics', '/sage/cognition', '/sage/world'} <= advertised
    received = {e['topic'] for e in by.get('message', [])}
    assert FED <= received, f'no message on {FED - received}'
    coherence = next(e for e in by['message'] if e['topic'] == '/sage/coherence')['json']
    assert coherence['score'] == 0.5
    # the client's attempt to publish is answered with an error status, nothing else
    assert by['advertiseSent'] and any(                         # the server answers no
        s['level'] == 2 and 'clientPublish' in s['message'] for s in by.get('status', []))
