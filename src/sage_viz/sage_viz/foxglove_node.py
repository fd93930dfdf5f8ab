"""Foxglove: a live WebSocket view of SAGE, and MCAP recording, with foxglove-sdk.

Serves on ``host``:``port`` (127.0.0.1 by default) to clients of either protocol name,
``foxglove.websocket.v1`` (@foxglove/ws-protocol, Lichtblick) or ``foxglove.sdk.v1``
(current Foxglove), through sage_viz.ws_relay; clients cannot publish: the
ClientPublish capability is never offered. It shows the camera image (foxglove
RawImage, at most ``image_hz``) and JSON channels: /sage/coherence (score,
trust reported and used per modality, ACT steps, latency), /sage/trust (each
sensor feature's trust), /sage/features (each feature's vector, trust and
quality figures, at most ``feature_hz`` per modality), /sage/salience,
/sage/action, /sage/cognition (text of every cognition node) and /diagnostics;
with the built-in world, /sage/world (a foxglove SceneUpdate for the 3D panel:
arena, beacons, target, robot). With ``mcap_path`` set, the same channels are
also written to an MCAP file. config/foxglove/sage_layout.json is a layout
that shows them at a glance.
"""

from __future__ import annotations

import math
import os
import time

import foxglove
from diagnostic_msgs.msg import DiagnosticArray
from foxglove.channels import RawImageChannel, SceneUpdateChannel
from foxglove.messages import (ArrowPrimitive, Color, CylinderPrimitive, LinePrimitive,
                               LinePrimitiveLineType, Point3, Pose, Quaternion, RawImage,
                               SceneEntity, SceneUpdate, TextPrimitive, Timestamp, Vector3)
from geometry_msgs.msg import PoseStamped
from sage_common.paths import resolve_path
from sage_common.validate import world_layout
from sage_viz.ws_relay import ProtocolRelay
from sage_ros.guard import GuardedNode
from sage_ros.common import (Diagnostics, Param, declare_parameters, qos_from_name, run_node)

from sage_msgs.msg import Action, Coherence, Feature, Salience
from sensor_msgs.msg import Image
from std_msgs.msg import String

PARAMS = [
    Param('host', '127.0.0.1', 'address the WebSocket server binds (0.0.0.0 exposes it)'),
    Param('port', 8765, 'WebSocket port (0 = any free port)', low=0, high=65535),
    Param('mcap_path', '', 'also record to this MCAP file (relative: under $SAGE_HOME)'),
    Param('image_hz', 5.0, 'most camera frames per second sent', low=0.1, high=100.0),
    Param('modalities', ['vision', 'audio', 'imu', 'cognition_main', 'memory'],
          'features whose trust is shown'),
    Param('cognition', ['main'], 'cognition nodes whose text is shown'),
    Param('feature_hz', 5.0, 'most feature vectors per second and modality sent',
          low=0.1, high=1000.0),
]


def _pose(x: float, y: float, z: float = 0.0, yaw: float = 0.0) -> Pose:
    return Pose(position=Vector3(x=x, y=y, z=z),
                orientation=Quaternion(x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2)))


def layout_file() -> str:
    """Return the path of the Foxglove layout (installed share, else the source tree)."""
    try:
        from ament_index_python.packages import get_package_share_directory
        path = os.path.join(get_package_share_directory('sage_bringup'), 'config', 'foxglove',
                            'sage_layout.json')
        if os.path.exists(path):
            return os.path.realpath(path)
    except Exception:  # not installed: the repository layout
        pass
    here = os.path.dirname(os.path.realpath(__file__))
    return os.path.normpath(os.path.join(here, '..', '..', '..', 'config', 'foxglove',
                                         'sage_layout.json'))


def world_scene(layout: dict, robot, stamp: Timestamp) -> SceneUpdate:
    """Return a Foxglove scene of the built-in world: layout dict, robot (x, y, yaw) or None."""
    half = float(layout.get('arena_m', 6.0)) / 2
    frame = layout.get('frame_id', 'map')
    grey, white = Color(r=0.8, g=0.8, b=0.8, a=1.0), Color(r=1.0, g=1.0, b=1.0, a=1.0)
    walls = LinePrimitive(type=LinePrimitiveLineType.LineStrip, pose=_pose(0, 0),
                          thickness=0.04, scale_invariant=False, color=grey,
                          points=[Point3(x=x * half, y=y * half, z=0.0) for x, y in
                                  ((-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1))])
    cylinders, texts = [], []
    for obj in layout.get('objects', []):
        r, g, b = (c / 255.0 for c in obj['rgb'])
        d = 2 * float(obj['radius'])
        cylinders.append(CylinderPrimitive(pose=_pose(obj['x'], obj['y'], 0.25),
                                           size=Vector3(x=d, y=d, z=0.5), bottom_scale=1.0,
                                           top_scale=1.0, color=Color(r=r, g=g, b=b, a=1.0)))
        if obj['name'] == layout.get('target'):
            texts.append(TextPrimitive(pose=_pose(obj['x'], obj['y'], 0.7), billboard=True,
                                       font_size=14.0, scale_invariant=True, color=white,
                                       text=f'target: {obj["name"]}'))
    arrows = []
    if robot is not None:
        x, y, yaw = robot
        arrows.append(ArrowPrimitive(pose=_pose(x, y, 0.05, yaw), shaft_length=0.3,
                                     shaft_diameter=0.06, head_length=0.15, head_diameter=0.14,
                                     color=Color(r=0.1, g=0.6, b=1.0, a=1.0)))
    return SceneUpdate(entities=[SceneEntity(
        timestamp=stamp, frame_id=frame, id='world', lines=[walls], cylinders=cylinders,
        texts=texts, arrows=arrows)])


class FoxgloveNode(GuardedNode):
    """See the module doc."""

    def __init__(self, **kwargs):
        super().__init__(kwargs.pop('node_name', 'foxglove'), **kwargs)
        self.p = declare_parameters(self, PARAMS)
        self.diag = Diagnostics(self)
        self.fox = foxglove.Context()
        self.mcap = None
        if self.p['mcap_path']:
            self.mcap = foxglove.open_mcap(resolve_path(self.p['mcap_path']),
                                           context=self.fox)
        # the SDK server on an internal port; the relay serves both protocol names
        self.server = foxglove.start_server(name='SAGE', host='127.0.0.1', port=0,
                                            context=self.fox)
        upstream = f'ws://127.0.0.1:{self.server.port}'
        try:
            self.relay = ProtocolRelay(self.p['host'], self.p['port'], upstream)
        except OSError as exc:      # e.g. another SAGE on this machine: a viewer still helps
            self.get_logger().warning(f'{exc}; serving on a free port instead (set port)')
            self.relay = ProtocolRelay(self.p['host'], 0, upstream)
        self.port = self.relay.port
        self.channels = {name: foxglove.Channel(name, message_encoding='json',
                                                context=self.fox)
                         for name in ('/sage/coherence', '/sage/trust', '/sage/salience',
                                      '/sage/action', '/sage/cognition', '/diagnostics',
                                      '/sage/features')}
        self.image_channel = RawImageChannel('/camera/image', context=self.fox)
        self.world_channel = SceneUpdateChannel('/sage/world', context=self.fox)
        self.trust: dict[str, float] = {}
        self.layout: dict = {}
        self._last_image = 0.0
        self._last_feature: dict[str, float] = {}
        sensor = qos_from_name('SENSOR_DATA')
        self.create_subscription(Image, 'camera/image_raw', self._on_image, sensor)
        self.create_subscription(Coherence, 'sage/coherence', self._on_coherence, 10)
        self.create_subscription(Salience, 'sage/salience', self._on_salience, 10)
        self.create_subscription(Action, 'sage/action', self._on_action, 10)
        self.create_subscription(DiagnosticArray, 'diagnostics', self._on_diagnostics, 10)
        self.create_subscription(PoseStamped, 'sage/world/robot_pose', self._on_pose, 10)
        self.create_subscription(String, 'sage/world/layout', self._on_layout,
                                 qos_from_name('LATCHED'))
        for m in self.p['modalities']:
            self.create_subscription(Feature, f'sage/features/{m}', self._on_feature, sensor)
        for name in self.p['cognition']:
            self.create_subscription(String, f'sage/cognition/{name}/text',
                                     lambda msg, n=name: self._log('/sage/cognition', {
                                         'node': n, 'text': msg.data}), 10)
        self.diag.set('OK', f'serving ws://{self.p["host"]}:{self.port} (foxglove.websocket.v1 '
                      f'and foxglove.sdk.v1)', port=self.port, mcap=self.p['mcap_path'])
        self.get_logger().info(f'Foxglove: open ws://{self.p["host"]}:{self.port} and load the '
                               f'layout {layout_file()}')

    def _log(self, channel: str, data: dict) -> None:
        self.channels[channel].log(data)

    def _on_image(self, msg: Image) -> None:
        now = time.monotonic()
        if now - self._last_image < 1.0 / self.p['image_hz']:
            return
        self._last_image = now
        self.image_channel.log(RawImage(
            timestamp=Timestamp(sec=msg.header.stamp.sec, nsec=msg.header.stamp.nanosec),
            frame_id=msg.header.frame_id, width=msg.width, height=msg.height,
            encoding=msg.encoding, step=msg.step, data=bytes(msg.data)))

    def _on_coherence(self, msg: Coherence) -> None:
        names = list(msg.modalities)
        self._log('/sage/coherence', {
            'score': msg.score, 'act_steps': msg.act_steps, 'latency_ms': msg.latency_ms,
            'model_version': msg.model_version,
            'trust_in': dict(zip(names, map(float, msg.trust_in))),
            'trust_used': dict(zip(names, map(float, msg.trust_used)))})

    def _on_feature(self, msg: Feature) -> None:
        self.trust[msg.modality] = float(msg.trust)
        self._log('/sage/trust', dict(self.trust))
        now = time.monotonic()
        if now - self._last_feature.get(msg.modality, 0.0) >= 1.0 / self.p['feature_hz']:
            self._last_feature[msg.modality] = now
            self._log('/sage/features', {
                'modality': msg.modality, 'trust': float(msg.trust),
                'data': [round(float(x), 5) for x in msg.data],
                'quality': dict(zip(msg.quality_names, map(float, msg.quality_values)))})

    def _on_layout(self, msg: String) -> None:
        try:
            self.layout = world_layout(msg.data)
        except ValueError as exc:
            self.diag.set('WARN', f'ignored a bad sage/world/layout: {exc}')

    def _on_pose(self, msg: PoseStamped) -> None:
        q = msg.pose.orientation
        robot = (msg.pose.position.x, msg.pose.position.y,
                 2 * math.atan2(q.z, q.w))                  # yaw of a planar pose
        layout = self.layout or {'frame_id': msg.header.frame_id}
        try:
            self.world_channel.log(world_scene(layout, robot, Timestamp(
                sec=msg.header.stamp.sec, nsec=msg.header.stamp.nanosec)))
        except (KeyError, TypeError, ValueError) as exc:
            self.diag.set('WARN', f'cannot draw the world: {exc}')

    def _on_salience(self, msg: Salience) -> None:
        self._log('/sage/salience', {k: float(getattr(msg, k)) for k in (
            'surprise', 'novelty', 'arousal', 'reward', 'conflict', 'total')})

    def _on_action(self, msg: Action) -> None:
        self._log('/sage/action', {'name': msg.discrete_name, 'id': msg.discrete_id,
                                   'command': list(msg.continuous),
                                   'confidence': msg.confidence})

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            self._log('/diagnostics', {'name': status.name, 'level': int.from_bytes(
                status.level, 'little') if isinstance(status.level, bytes) else
                int(status.level), 'message': status.message})

    def destroy_node(self):
        """Stop the relay and the server and finish the MCAP file (whatever fails first)."""
        try:
            self.relay.stop()
            self.server.stop()
        finally:
            if self.mcap is not None:
                self.mcap.close()
        return super().destroy_node()


def main(args=None):
    """Run the Foxglove bridge."""
    raise SystemExit(run_node(FoxgloveNode, args))
