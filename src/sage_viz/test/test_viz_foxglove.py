"""Foxglove: a real WebSocket client sees SAGE's channels and data; MCAP is written."""

import asyncio
import json
import os

import numpy as np
import websockets
from rclpy.parameter import Parameter
from sage_viz.foxglove_node import FoxgloveNode
from sage_ros.image_conv import numpy_to_image
from sage_ros.common import qos_from_name
from sage_testing.graph import Graph
from sage_msgs.msg import Coherence
from sensor_msgs.msg import Image

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))
SCHEMAS = {}


def _panels(tree):
    """Panel ids named in a layout tree."""
    if isinstance(tree, str):
        return {tree}
    return _panels(tree['first']) | _panels(tree['second'])


async def _watch(port, topic, publish, tries=40, accept=lambda payload: True):
    """Connect as Foxglove does, subscribe to ``topic``, return (channels, first payload).

    ``accept`` skips payloads that are not yet the one wanted (None if none came).
    """
    async with websockets.connect(f'ws://127.0.0.1:{port}',
                                  subprotocols=['foxglove.sdk.v1']) as ws:
        channels = {}
        while topic not in channels:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if msg['op'] == 'serverInfo':
                assert 'clientPublish' not in msg.get('capabilities', [])
            if msg['op'] == 'advertise':
                channels.update({c['topic']: c['id'] for c in msg['channels']})
                SCHEMAS.update({c['topic']: c['schemaName'] for c in msg['channels']})
        await ws.send(json.dumps({'op': 'subscribe', 'subscriptions': [
            {'id': 1, 'channelId': channels[topic]}]}))
        for _ in range(tries):
            publish()
            try:
                frame = await asyncio.wait_for(ws.recv(), 0.25)
            except asyncio.TimeoutError:
                continue
            if isinstance(frame, bytes) and frame[0] == 1 and accept(frame[1 + 4 + 8:]):
                return channels, frame[1 + 4 + 8:]      # message data
    return channels, None


def test_live_channels_reach_a_websocket_client_and_mcap_is_written(tmp_path):
    mcap = tmp_path / 'sage.mcap'
    with Graph() as g:
        node = g.add(FoxgloveNode(context=g.context, parameter_overrides=[
            Parameter('port', value=0), Parameter('mcap_path', value=str(mcap))]))
        coherence = g.publisher(Coherence, 'sage/coherence')
        camera = g.publisher(Image, 'camera/image_raw', qos_from_name('SENSOR_DATA'))
        channels, payload = asyncio.run(_watch(node.port, '/sage/coherence', lambda: (
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
            for p in v.get('paths', [])} | {
            t for v in layout['configById'].values() for t in v.get('topics', {})}
        assert used - {None} <= set(channels), 'the layout names a channel SAGE lacks'
        assert _panels(layout['layout']) == set(layout['configById'])
        g.remove(node)
        node.destroy_node()                                  # finishes the MCAP file
    blob = mcap.read_bytes()
    assert blob.startswith(b'\x89MCAP')
    assert b'/sage/coherence' in blob and b'/camera/image' in blob


def test_features_and_the_world_scene_reach_a_client():
    from sage_msgs.msg import Feature
    from sage_sim.world_node import WorldNode
    with Graph() as g:
        world = g.add(WorldNode(context=g.context, parameter_overrides=[
            Parameter('seed', value=5), Parameter('real_time_factor', value=2.0),
            Parameter('time_limit_s', value=3600.0)]))   # one episode for the whole test
        node = g.add(FoxgloveNode(context=g.context, parameter_overrides=[
            Parameter('port', value=0)]))
        vision = g.publisher(Feature, 'sage/features/vision')
        _, payload = asyncio.run(_watch(node.port, '/sage/features', lambda: (
            vision.publish(Feature(modality='vision', data=[0.5, 0.25], trust=0.75,
                                   quality_names=['blur'], quality_values=[0.125])))))
        assert payload is not None, 'no feature arrived'
        assert json.loads(payload) == {'modality': 'vision', 'trust': 0.75, 'data': [0.5, 0.25],
                                       'quality': {'blur': 0.125}}
        # poses may come before the latched layout (a scene of the robot alone): wait for
        # the full scene; protobuf keeps strings as UTF-8, so the label is in the bytes
        label = f'target: {world.world.target_name}'.encode()
        _, payload = asyncio.run(_watch(node.port, '/sage/world', lambda: None,
                                        accept=lambda p: label in p))
        assert SCHEMAS['/sage/world'] == 'foxglove.SceneUpdate'
        assert payload is not None, 'no world scene with the target arrived'
        assert b'map' in payload
