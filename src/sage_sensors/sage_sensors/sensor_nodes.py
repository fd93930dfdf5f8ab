"""Camera, microphone and IMU nodes: raw sensor topics in, trust-weighted Features out.

Thin adapters over sage_sensors.features. Each subscribes to its driver's raw
topic (any ROS driver, the world, or a bag) with sensor-data QoS (a parameter),
publishes ``sage/features/<modality>`` stamped with the observation's stamp, and
reports rate, trust and dropped inputs on ``diagnostics``. Bad messages (wrong
encoding or size, NaN) are dropped with a throttled warning and counted.
"""

from __future__ import annotations

import time

import numpy as np
from rclpy.node import Node
from sage_core.image_conv import ImageError, image_to_numpy
from sage_core.ros_common import (Diagnostics, Param, QOS_CHOICES, Throttle,
                                  declare_parameters, make_feature, qos_from_name)
from sage_msgs.msg import AudioChunk, Feature
from sensor_msgs.msg import Image, Imu

from sage_sensors.features import AudioFeatures, ImuFeatures, VisionFeatures


class SensorNode(Node):
    """Common adapter: subscribe raw, extract, publish a Feature, count, diagnose."""

    modality = ''
    raw_type = None
    raw_topic = ''
    extra_params: list = []

    def __init__(self, default_name: str, **kwargs):
        super().__init__(kwargs.pop('node_name', default_name), **kwargs)
        self.p = declare_parameters(self, [
            Param('qos', 'SENSOR_DATA', 'QoS of the raw subscription', choices=QOS_CHOICES),
            Param('frame_id', '', 'frame of the feature (empty: the raw message\'s)'),
            *self.extra_params])
        self.extractor = self.make_extractor()
        self.diag = Diagnostics(self)
        self.pub = self.create_publisher(Feature, f'sage/features/{self.modality}', 10)
        self.create_subscription(self.raw_type, self.raw_topic, self._on_raw,
                                 qos_from_name(self.p['qos']))
        self.received = self.dropped = 0
        self.last_trust = 0.0
        self._warn = Throttle(5.0)
        self._t0 = time.monotonic()
        self.create_timer(1.0, self._report)
        self.diag.set('OK', f'waiting for {self.raw_topic}')

    def make_extractor(self):
        """Return the feature extractor."""
        raise NotImplementedError

    def extract(self, msg, now_s: float):
        """Return (feature, trust, quality) for one raw message; raise ValueError if bad."""
        raise NotImplementedError

    def _on_raw(self, msg) -> None:
        self.received += 1
        stamp = msg.header.stamp
        try:
            feature, trust, quality = self.extract(msg, stamp.sec + stamp.nanosec * 1e-9)
            if not np.all(np.isfinite(feature)):
                raise ValueError('non-finite feature')
        except (ValueError, ImageError) as exc:
            self.dropped += 1
            if self._warn():
                self.get_logger().warning(f'dropped {self.raw_topic} message: {exc} '
                                          f'({self.dropped} dropped so far)')
            return
        self.last_trust = trust
        self.pub.publish(make_feature(self, self.modality, feature, trust, quality,
                                      self.p['frame_id'] or msg.header.frame_id,
                                      header_stamp=stamp))

    def _report(self) -> None:
        rate = self.received / max(1e-6, time.monotonic() - self._t0)
        if self.received == 0:
            self.diag.set('WARN', f'no messages on {self.raw_topic} yet')
            return
        level = 'WARN' if self.last_trust < 0.3 else 'OK'
        self.diag.set(level, f'trust {self.last_trust:.2f}', rate_hz=rate,
                      received=self.received, dropped=self.dropped, trust=self.last_trust)


class CameraNode(SensorNode):
    """camera/image_raw -> sage/features/vision."""

    modality, raw_type, raw_topic = 'vision', Image, 'camera/image_raw'

    def __init__(self, **kwargs):
        super().__init__('camera', **kwargs)

    def make_extractor(self):
        """Vision profile extractor."""
        return VisionFeatures()

    def extract(self, msg, now_s):
        """Convert to RGB and encode."""
        image = image_to_numpy(msg)
        if msg.encoding in ('bgr8', 'bgra8'):
            image = image[:, :, 2::-1]
        elif msg.encoding == 'rgba8':
            image = image[:, :, :3]
        elif image.ndim == 2 and image.dtype == np.uint8:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.dtype != np.uint8:
            raise ValueError(f'cannot use {msg.encoding} images as colour input')
        return self.extractor.encode(np.ascontiguousarray(image), now_s)


class MicrophoneNode(SensorNode):
    """audio/chunk -> sage/features/audio."""

    modality, raw_type, raw_topic = 'audio', AudioChunk, 'audio/chunk'

    def __init__(self, **kwargs):
        super().__init__('microphone', **kwargs)

    def make_extractor(self):
        """Audio band-energy extractor."""
        return AudioFeatures()

    def extract(self, msg, now_s):
        """Decode S16LE, mix to mono, encode."""
        if msg.encoding != 'S16LE' or msg.channels < 1 or msg.sample_rate < 1000:
            raise ValueError(f'unsupported audio {msg.encoding} x{msg.channels} '
                             f'@{msg.sample_rate} Hz (need S16LE)')
        data = bytes(msg.data)
        if len(data) % (2 * msg.channels):
            raise ValueError(f'{len(data)} bytes is not a whole number of frames')
        samples = np.frombuffer(data, '<i2').reshape(-1, msg.channels)
        mono = samples.mean(axis=1).astype(np.int16) if msg.channels > 1 else samples[:, 0]
        return self.extractor.encode(mono, msg.sample_rate, now_s)


class ImuNode(SensorNode):
    """imu/data_raw (REP-145) -> sage/features/imu."""

    modality, raw_type, raw_topic = 'imu', Imu, 'imu/data_raw'

    def __init__(self, **kwargs):
        super().__init__('imu', **kwargs)

    def make_extractor(self):
        """Windowed IMU statistics."""
        return ImuFeatures()

    def extract(self, msg, now_s):
        """Encode one IMU sample."""
        a, g = msg.linear_acceleration, msg.angular_velocity
        return self.extractor.encode([a.x, a.y, a.z], [g.x, g.y, g.z], now_s)


def camera_main(args=None):
    """Run the camera node."""
    from sage_core.ros_common import run_node
    raise SystemExit(run_node(CameraNode, args))


def microphone_main(args=None):
    """Run the microphone node."""
    from sage_core.ros_common import run_node
    raise SystemExit(run_node(MicrophoneNode, args))


def imu_main(args=None):
    """Run the IMU node."""
    from sage_core.ros_common import run_node
    raise SystemExit(run_node(ImuNode, args))
