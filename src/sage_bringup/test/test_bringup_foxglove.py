"""Foxglove: a real WebSocket client sees SAGE's channels and data; MCAP is written."""

import asyncio
import json
import os

import numpy as np
import websockets
from rclpy.parameter import Parameter
from sage_bringup.foxglove_node import FoxgloveNode
from sage_core.image_conv import numpy_to_image
from sage_core.ros_common import qos_from_name
from sage_core.testing import Graph
from sage_msgs.msg import Coherence
from sensor_msgs.msg import Image

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))


async def _watch(port, topic, publish, tries=40):
    """Connect as Foxglove does, subscribe to ``topic``, return (channels, first payload)."""
    async with websockets.connect(f'ws://127.0.0.1:{port}',
                                  subprotocols=['foxglove.sdk.v1']) as ws:
        channels = {}
        while not channels:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if msg['op'] == 'serverInfo':
                assert 'clientPublish' not in msg.get('capabilities', [])
            if msg['op'] == 'advertise':
                channels = {c['topic']: c['id'] for c in msg['channels']}
        await ws.send(json.dumps({'op': 'subscribe', 'subscriptions': [
            {'id': 1, 'channelId': channels[topic]}]}))
        for _ in range(tries):
            publish()
            try:
                frame = await asyncio.wait_for(ws.recv(), 0.25)
            except asyncio.TimeoutError:
                continue
            if isinstance(frame, bytes) and frame[0] == 1:      # message data
                return channels, frame[1 + 4 + 8:]
    return channels, None


def test_live_channels_reach_a_websocket_client_and_mcap_is_written(tmp_path):
    mcap = tmp_path / 'sage.mcap'
    with Graph() as g:
        node = g.add(FoxgloveNode(context=g.context, parameter_overrides=[
            Parameter('port', value=0), Parameter('mcap_path', value=str(mcap))]))
        coherence = g.publisher(Coherence, 'sage/coherence')
        camera = g.publisher(Image, 'camera/image_raw', qos_from_name('SENSOR_DATA'))
        channels, payload = asyncio.run(_watch(node.server.port, '/sage/coherence', lambda: (
            coherence.publish(Coherence(score=0.75, modalities=['vision', 'imu'],
                                        trust_in=[0.9, 0.5], trust_used=[0.8, 0.25])),
            camera.publish(numpy_to_image(np.zeros((12, 16, 3), np.uint8), 'rgb8')))))
        assert payload is not None, 'no coherence data arrived'
        data = json.loads(payload)
        assert data['score'] == 0.75 and data['trust_used']['imu'] == 0.25
        assert abs(data['trust_used']['vision'] - 0.8) < 1e-6
        layout = json.load(open(os.path.join(ROOT, 'config', 'foxglove', 'sage_layout.json')))
        used = {v.get('topicPath') or v.get('imageMode', {}).get('imageTopic')
                for v in layout['configById'].values()} | {
            p['value'].split('.')[0] for v in layout['configById'].values()
            for p in v.get('paths', [])}
        assert used - {None} <= set(channels), 'the layout names a channel SAGE lacks'
        g.executor.remove_node(node)
        node.destroy_node()                                  # finishes the MCAP file
    blob = mcap.read_bytes()
    assert blob.startswith(b'\x89MCAP')
    assert b'/sage/coherence' in blob and b'/camera/image' in blob
