"""Foxglove: a live WebSocket view of SAGE, and MCAP recording, with foxglove-sdk.

Serves on ``host``:``port`` (127.0.0.1 by default; clients cannot publish: the
ClientPublish capability is never offered) the camera image (foxglove
RawImage, at most ``image_hz``) and JSON channels: /sage/coherence (score,
trust reported and used per modality, ACT steps, latency), /sage/trust (each
sensor feature's trust), /sage/salience, /sage/action, /sage/cognition (text of
every cognition node) and /diagnostics. With ``mcap_path`` set, the same
channels are also written to an MCAP file. config/foxglove/sage_layout.json
is a layout that shows them at a glance.
"""

from __future__ import annotations

import time

import foxglove
from diagnostic_msgs.msg import DiagnosticArray
from foxglove.channels import RawImageChannel
from foxglove.messages import RawImage, Timestamp
from rclpy.node import Node
from sage_core.ros_common import (Diagnostics, Param, declare_parameters, qos_from_name,
                                  resolve_path, run_node)
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
]


class FoxgloveNode(Node):
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
        self.server = foxglove.start_server(name='SAGE', host=self.p['host'],
                                            port=self.p['port'], context=self.fox)
        self.channels = {name: foxglove.Channel(name, message_encoding='json',
                                                context=self.fox)
                         for name in ('/sage/coherence', '/sage/trust', '/sage/salience',
                                      '/sage/action', '/sage/cognition', '/diagnostics')}
        self.image_channel = RawImageChannel('/camera/image', context=self.fox)
        self.trust: dict[str, float] = {}
        self._last_image = 0.0
        sensor = qos_from_name('SENSOR_DATA')
        self.create_subscription(Image, 'camera/image_raw', self._on_image, sensor)
        self.create_subscription(Coherence, 'sage/coherence', self._on_coherence, 10)
        self.create_subscription(Salience, 'sage/salience', self._on_salience, 10)
        self.create_subscription(Action, 'sage/action', self._on_action, 10)
        self.create_subscription(DiagnosticArray, 'diagnostics', self._on_diagnostics, 10)
        for m in self.p['modalities']:
            self.create_subscription(Feature, f'sage/features/{m}', self._on_feature, sensor)
        for name in self.p['cognition']:
            self.create_subscription(String, f'sage/cognition/{name}/text',
                                     lambda msg, n=name: self._log('/sage/cognition', {
                                         'node': n, 'text': msg.data}), 10)
        self.diag.set('OK', f'serving ws://{self.p["host"]}:{self.server.port}',
                      port=self.server.port, mcap=self.p['mcap_path'])

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
        """Stop the server and finish the MCAP file."""
        self.server.stop()
        if self.mcap is not None:
            self.mcap.close()
        return super().destroy_node()


def main(args=None):
    """Run the Foxglove bridge."""
    raise SystemExit(run_node(FoxgloveNode, args))
