"""Camera, microphone and IMU nodes: raw sensor data in, trust-weighted Features out.

Thin adapters over the ROS-free modules of sage_sensors. Each node takes its
input from a topic (any ROS driver, the world, a bag) with sensor-data QoS (a
parameter), or with ``source: device`` drives the hardware itself (OpenCV
capture, a sounddevice stream or file, an MPU-6050/9250 on I2C or a serial
IMU), publishing the raw topic as a driver would. It publishes
``sage/features/<modality>`` stamped with the observation's stamp and reports
rate, trust, drops and device state on ``diagnostics``.

Missing or failing hardware: the node says what it looked for and what exists,
reports ERROR, retries every ``retry_period_s`` and keeps serving the raw
topic meanwhile (while the device delivers, topic input is ignored: its own
frames come back on it). Bad messages (wrong encoding or size, NaN) are dropped
with a throttled warning and counted. The feature vectors keep the layout of
``sage_sensors.features`` unless an option (encoder, extended features,
orientation) appends to them, so trained models keep working.
"""

from __future__ import annotations

import copy
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sage_ros.guard import GuardedNode
from sage_ros.image_conv import ImageError, image_to_rgb, numpy_to_image
from sage_common.paths import resolve_path
from sage_ros.common import (Diagnostics, Param, QOS_CHOICES, Throttle, declare_parameters,
                             make_feature, qos_from_name, seconds)

from sage_msgs.msg import AudioChunk, Detection2D, Detection2DArray, Feature
from sensor_msgs.msg import CameraInfo, Image, Imu, LaserScan
from std_msgs.msg import String

from sage_sensors.detect import SCAN_MAX_M, SCAN_MIN_M, even_scan
from sage_sensors.sensing import (CameraConfig, CameraSensing, ImuConfig, ImuSensing,
                                  MicrophoneConfig, MicrophoneSensing, decode_audio)


def config_from(params: dict, config_type):
    """Build the sensing step's config from the node's parameters of the same names."""
    import dataclasses
    return config_type(**{f.name: params[f.name] for f in dataclasses.fields(config_type)})


class SensorNode(GuardedNode):
    """Common adapter: topic or device in, extract, publish a Feature, count, diagnose."""

    modality = ''
    raw_type = None
    raw_topic = ''
    default_frame = ''
    default_qos_depth = 0
    extra_params: list = []

    def __init__(self, default_name: str, **kwargs):
        super().__init__(kwargs.pop('node_name', default_name), **kwargs)
        self.p = declare_parameters(self, [
            Param('qos', 'SENSOR_DATA', 'QoS of the raw subscription', choices=QOS_CHOICES),
            Param('qos_depth', self.default_qos_depth, 'queue depth of the raw subscription '
                  '(0: the profile\'s own; a fast IMU needs room for a scheduling hiccup)',
                  low=0, high=100000),
            Param('frame_id', '', 'frame of the feature and, as a driver, of the raw '
                  f'messages (empty: the raw message\'s; as a driver {self.default_frame})'),
            Param('source', 'topic', 'where raw data come from', choices=('topic', 'device')),
            Param('raw_qos', 'SENSOR_DATA', 'QoS of the raw topic published as a driver',
                  choices=QOS_CHOICES),
            Param('retry_period_s', 5.0, 'seconds between attempts to open missing hardware',
                  low=0.05, high=3600.0),
            Param('stale_after_s', 0.5, 'age (node clock - stamp) where trust starts to '
                  'fall, reaching 0 at twice this; 0 disables', low=0.0, high=3600.0),
            *self.extra_params])
        self.sensing = self.make_sensing()
        self.diag = Diagnostics(self)
        self.pub = self.create_publisher(Feature, f'sage/features/{self.modality}', 10)
        qos = copy.copy(qos_from_name(self.p['qos']))     # SYSTEM_DEFAULT is shared
        if self.p['qos_depth'] and self.p['qos'] != 'LATCHED':
            qos.depth = self.p['qos_depth']
        self.create_subscription(self.raw_type, self.raw_topic, self._on_topic, qos)
        self.received = self.dropped = self.ignored = self.published = 0
        self.last_trust = 0.0
        self._warn = Throttle(5.0)
        self._lock = threading.Lock()          # sensing keeps state: one caller at a time
        self._t0 = time.monotonic()
        self.device_ok, self.device_error, self.device_done = False, '', False
        self._stop = threading.Event()
        self._thread = None
        if self.p['source'] == 'device':
            self.raw_pub = self.create_publisher(self.raw_type, self.raw_topic,
                                                 qos_from_name(self.p['raw_qos']))
        self.create_timer(1.0, self._report)
        self.diag.set('OK', f'waiting for {self.raw_topic}')

    def start(self) -> None:
        """Start the driver thread (subclasses call this when fully built)."""
        if self.p['source'] == 'device' and self._thread is None:
            self._thread = threading.Thread(target=self._device_loop, daemon=True,
                                            name=f'{self.modality}_driver')
            self._thread.start()

    # -- to be provided by each sensor ----------------------------------------------------
    def make_sensing(self):
        """Return the sensor's sensing step (sage_sensors.sensing) built from parameters."""
        raise NotImplementedError

    def sense(self, msg, stamp_s: float, now_s: float):
        """Call the sensing step on one raw message: a Sensed, None (held back) or ValueError."""
        raise NotImplementedError

    def open_device(self):
        """Open the hardware; return a driver object; raise with what was looked for."""
        raise NotImplementedError

    def read_device(self, driver):
        """Return the next raw message from ``driver`` (stamped), or None when it ended."""
        raise NotImplementedError

    def extra_status(self):
        """Return (level, message) to report instead of the trust summary, or None."""
        return None

    # -- common machinery ---------------------------------------------------------------
    @property
    def driver_frame(self) -> str:
        """Frame id of raw messages this node publishes as a driver."""
        return self.p['frame_id'] or self.default_frame

    def now_s(self) -> float:
        """Node clock in seconds (sim time aware)."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_topic(self, msg) -> None:
        if self.device_ok:
            self.ignored += 1
            return
        self.process(msg)

    def process(self, msg) -> None:
        """Turn one raw message into a Feature; drop and count it if it is bad."""
        self.received += 1
        stamp = msg.header.stamp
        now = self.now_s()
        # an unstamped message cannot be judged stale: treat it as taken now
        t_obs = seconds(stamp) if (stamp.sec or stamp.nanosec) else now
        try:
            with self._lock:
                sensed = self.sense(msg, t_obs, now)
        except (ValueError, ImageError, TypeError) as exc:
            self.dropped += 1
            if self._warn():
                self.get_logger().warning(f'dropped {self.raw_topic} message: {exc} '
                                          f'({self.dropped} dropped so far)')
            return
        if sensed is None:
            return
        self.last_trust = sensed.trust
        self.published += 1
        self.pub.publish(make_feature(self, self.modality, sensed.vector, sensed.trust,
                                      sensed.quality, self.p['frame_id'] or msg.header.frame_id,
                                      header_stamp=stamp if stamp.sec or stamp.nanosec
                                      else None))

    def _device_loop(self) -> None:
        log = self.get_logger()
        while not self._stop.is_set():
            try:
                driver = self.open_device()
            except Exception as exc:  # drivers raise many kinds; report, retry, keep serving
                self.device_ok, self.device_error = False, str(exc)
                log.error(f'{exc}; retrying in {self.p["retry_period_s"]:.3g} s, serving '
                          f'{self.raw_topic} meanwhile')
                self._stop.wait(self.p['retry_period_s'])
                continue
            self.device_ok, self.device_error = True, ''
            log.info(f'{self.modality} device open: {self.p.get("device", "")!r}')
            try:
                while not self._stop.is_set():
                    msg = self.read_device(driver)
                    if msg is None:
                        self.device_done = True
                        break
                    self.raw_pub.publish(msg)
                    self.process(msg)
            except Exception as exc:  # a failing device: report and reopen
                if self._stop.is_set() or not self.context.ok():
                    return                 # shutting down: publish calls fail, not the device
                self.device_error = f'{self.modality} device failed: {exc}'
                log.error(self.device_error)
            finally:
                self.device_ok = False
                close = getattr(driver, 'close', None)
                if close is not None:
                    close()
            if self.device_done:
                log.info(f'{self.modality} input ended; serving {self.raw_topic}')
                return
            self._stop.wait(self.p['retry_period_s'])

    def _report(self) -> None:
        rate = self.received / max(1e-6, time.monotonic() - self._t0)
        values = dict(rate_hz=rate, received=self.received, published=self.published,
                      dropped=self.dropped,
                      ignored=self.ignored, trust=self.last_trust, source=self.p['source'],
                      device_ok=self.device_ok)
        extra = self.extra_status()
        if self.p['source'] == 'device' and not self.device_ok and not self.device_done:
            self.diag.set('ERROR', f'{self.device_error or "opening device"}; retrying every '
                          f'{self.p["retry_period_s"]:.3g} s; serving {self.raw_topic}',
                          **values)
        elif self.received == 0:
            self.diag.set('WARN', f'no messages on {self.raw_topic} yet', **values)
        elif extra is not None:
            self.diag.set(extra[0], extra[1], **values)
        else:
            level = 'WARN' if self.last_trust < 0.3 else 'OK'
            self.diag.set(level, f'trust {self.last_trust:.2f}', **values)

    def destroy_node(self):
        """Stop the driver thread, then destroy the node."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3.0)
        return super().destroy_node()


def intrinsics(k, width: int, height: int) -> tuple:
    """Return (fx, fy, cx, cy, width, height) from a CameraInfo K; ValueError if unusable."""
    k = [float(v) for v in k]
    if len(k) != 9 or not all(np.isfinite(k)) or k[0] <= 0 or k[4] <= 0 or \
            not 0 < width <= 100000 or not 0 < height <= 100000:
        raise ValueError(f'K must hold 9 finite numbers with fx, fy > 0 and the size must be '
                         f'positive (K {k[:9]}, {width}x{height})')
    return k[0], k[4], k[2], k[5], int(width), int(height)


class CameraNode(SensorNode):
    """camera/image_raw (topic or OpenCV capture) -> sage/features/vision, sage/detections."""

    modality, raw_type, raw_topic = 'vision', Image, 'camera/image_raw'
    default_frame = 'camera_optical_frame'       # REP-103: z forward, x right, y down
    extra_params = [
        Param('device', '0', 'V4L2 index or /dev/videoN, a GStreamer pipeline (with "!"), '
              'a video file or an image folder'),
        Param('fps', 0.0, 'frame rate for files and folders (0: the file\'s own)',
              low=0.0, high=1000.0),
        Param('loop', True, 'restart a video file or folder at its end'),
        Param('width', 0, 'capture width requested from a V4L2 device (0: default)',
              low=0, high=10000),
        Param('height', 0, 'capture height requested from a V4L2 device (0: default)',
              low=0, high=10000),
        Param('camera_info_url', '', 'camera_calibration YAML (file path or file://); '
              'empty: uncalibrated'),
        Param('encoder', '', 'frame autoencoder file (relative to $SAGE_HOME); its latent '
              'is appended to the feature; empty: off'),
        Param('encoder_latent', 32, 'latent size appended when encoder is set', low=1,
              high=4096),
        Param('encoder_reload_s', 2.0, 'how often to check the encoder file for a new '
              'version', low=0.1, high=3600.0),
        Param('detect', True, 'publish sage/detections (sage_sensors.detect; needs the '
              'intrinsics from camera_info or camera_info_url)'),
        Param('object_height_m', 1.0, 'height of the objects to detect: range from their '
              'apparent size', low=0.01, high=100.0),
        Param('scan_frame', 'camera_link', 'frame of camera/scan (x forward, REP-103)'),
    ]

    def __init__(self, **kwargs):
        super().__init__('camera', **kwargs)
        self.info = None
        self.info_pub = None
        if self.p['source'] == 'device':
            self.info_pub = self.create_publisher(CameraInfo, 'camera/camera_info',
                                                  qos_from_name(self.p['raw_qos']))
        if self.p['camera_info_url']:
            from sage_sensors.camera import load_camera_info
            path = self.p['camera_info_url'].removeprefix('file://')
            self.info = load_camera_info(resolve_path(path))   # bad file: fail at start
        self.detector = self.intrinsics = None
        if self.p['detect']:
            from sage_sensors.detect import Detector, DetectorConfig
            self.detector = Detector(DetectorConfig(height_m=self.p['object_height_m']))
            self.pub_detections = self.create_publisher(Detection2DArray, 'sage/detections',
                                                        10)
            self.pub_scan = self.create_publisher(LaserScan, 'camera/scan', 10)
            if self.info is not None:
                self.intrinsics = intrinsics(self.info['k'], self.info['width'],
                                             self.info['height'])
            elif self.p['source'] == 'topic':
                self.create_subscription(CameraInfo, 'camera/camera_info', self._on_info,
                                         qos_from_name(self.p['qos']))
        if self.p['encoder']:
            self.create_timer(self.p['encoder_reload_s'], self._poll_encoder)
        self.start()

    def make_sensing(self):
        """Camera sensing with the encoder file resolved under $SAGE_HOME."""
        config = config_from(self.p, CameraConfig)
        if config.encoder:
            config.encoder = resolve_path(config.encoder)
        return CameraSensing(config)

    def _poll_encoder(self) -> None:
        with self._lock:
            if self.sensing.poll_encoder():
                self.get_logger().info(f'loaded frame encoder {self.sensing.encoder_file.path}')

    def sense(self, msg, stamp_s, now_s):
        """Convert to RGB, sense the frame and publish what it shows."""
        rgb = image_to_rgb(msg)
        sensed = self.sensing.step(rgb, stamp_s, now_s)
        if self.detector is not None:
            self._detect(rgb, msg.header)
        return sensed

    def _on_info(self, msg: CameraInfo) -> None:
        try:
            self.intrinsics = intrinsics(msg.k, msg.width, msg.height)
        except ValueError as exc:
            if self._warn():
                self.get_logger().warning(f'ignored camera/camera_info: {exc}')

    def _detect(self, rgb, header) -> None:
        k = self.intrinsics
        if k is None or (k[4], k[5]) != (rgb.shape[1], rgb.shape[0]):
            if self._warn():
                self.get_logger().warning('no detections: no camera_info for '
                                          f'{rgb.shape[1]}x{rgb.shape[0]} frames yet')
            return
        detections, (bearing, ranges) = self.detector.look(rgb, *k[:4])
        out = Detection2DArray(header=header)
        if self.p['frame_id']:
            out.header.frame_id = self.p['frame_id']
        out.detections = [Detection2D(
            class_id=d.class_id, score=d.score, center_x=d.center_x, center_y=d.center_y,
            size_x=d.size_x, size_y=d.size_y, bearing=d.bearing,
            bearing_variance=d.bearing_variance, range=d.range,
            range_variance=d.range_variance) for d in detections]
        self.pub_detections.publish(out)
        # the first surface per column, evenly resampled: a LaserScan (x forward, as REP-103)
        if len(bearing) < 2:
            return
        angles, ranges = even_scan(bearing, ranges)
        scan = LaserScan(angle_min=float(angles[0]), angle_max=float(angles[-1]),
                         angle_increment=float(angles[1] - angles[0]), range_min=SCAN_MIN_M,
                         range_max=SCAN_MAX_M, ranges=ranges.tolist())
        scan.header.stamp = header.stamp
        scan.header.frame_id = self.p['scan_frame']
        self.pub_scan.publish(scan)

    def extra_status(self):
        """Report an encoder that is configured but not usable."""
        return self.sensing.status()

    def open_device(self):
        """Open the OpenCV source named by ``device``."""
        from sage_sensors.camera import FrameSource
        return FrameSource(self.p['device'], self.p['fps'], self.p['loop'],
                           self.p['width'], self.p['height'])

    def read_device(self, driver):
        """Capture a frame; publish camera_info with the same header; return the Image."""
        frame = driver.read()
        if frame is None:
            return None
        msg = numpy_to_image(frame, 'rgb8')
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.driver_frame
        info = CameraInfo(header=msg.header, height=msg.height, width=msg.width)
        if self.info is not None:
            if (self.info['width'], self.info['height']) != (msg.width, msg.height) and \
                    self._warn():
                self.get_logger().warning(
                    f'calibration is for {self.info["width"]}x{self.info["height"]}, frames '
                    f'are {msg.width}x{msg.height}')
            info.distortion_model = self.info['distortion_model']
            info.d, info.k, info.r, info.p = (self.info[k] for k in 'dkrp')
        self.info_pub.publish(info)
        return msg


class MicrophoneNode(SensorNode):
    """audio/chunk (topic, sounddevice or a file) -> sage/features/audio (+ ASR)."""

    modality, raw_type, raw_topic = 'audio', AudioChunk, 'audio/chunk'
    default_frame = 'microphone_link'
    extra_params = [
        Param('device', '', 'sounddevice input (index or name; empty: default) or a .wav/.raw '
              'file (S16LE) played in real time'),
        Param('rate', 16000, 'sample rate of the input stream, Hz (files: their own)',
              low=8000, high=192000),
        Param('channels', 1, 'channels of the input stream', low=1, high=32),
        Param('block', 320, 'samples per chunk (320 = 20 ms at 16 kHz)', low=32, high=65536),
        Param('loop', True, 'restart a file at its end'),
        Param('vad', True, 'run Silero voice activity detection (quality voice_prob)'),
        Param('extended_features', False, 'append log-mel energies and voice probability '
              'to the feature (changes its length: off for the shipped models)'),
        Param('mel_bands', 40, 'log-mel bands when extended_features is on', low=8, high=128),
        Param('min_snr_db', 15.0, 'SNR room above the noise floor for full trust',
              low=1.0, high=80.0),
        Param('asr', False, 'recognise speech (pocketsphinx, English) and publish the '
              'transcript; needs vad'),
        Param('asr_topic', 'sage/instruction', 'topic for transcripts (std_msgs/String)'),
    ]

    def __init__(self, **kwargs):
        super().__init__('microphone', **kwargs)
        self.recognizer = self.asr_pub = None
        self.transcripts: list = []
        if self.p['asr']:
            from sage_sensors.audio import Recognizer
            self.recognizer = Recognizer()
            self.asr_pub = self.create_publisher(String, self.p['asr_topic'], 10)
            self._asr_pool = ThreadPoolExecutor(1)   # decoding takes ~0.1 s per second
        self.start()

    def make_sensing(self):
        """Microphone sensing; ASR needs the voice activity detector."""
        config = config_from(self.p, MicrophoneConfig)
        config.vad = config.vad or self.p['asr']
        return MicrophoneSensing(config)

    def sense(self, msg, stamp_s, now_s):
        """Decode S16LE to mono, sense the chunk, feed speech to ASR."""
        mono = decode_audio(msg.encoding, msg.channels, msg.sample_rate, bytes(msg.data))
        sensed = self.sensing.step(mono, msg.sample_rate, stamp_s, now_s)
        if self.recognizer is not None:
            utterance = self.recognizer.feed(mono, msg.sample_rate,
                                             self.sensing.voice_prob > 0.5)
            if utterance is not None:
                self._asr_pool.submit(self._transcribe, utterance)
        return sensed

    def _transcribe(self, utterance) -> None:
        text = self.recognizer.transcribe(utterance)
        if text:
            self.transcripts.append(text)
            self.get_logger().info(f'heard: {text!r}')
            self.asr_pub.publish(String(data=text))

    def open_device(self):
        """Open the sounddevice stream or file."""
        from sage_sensors.audio import AudioInput
        return AudioInput(self.p['device'], self.p['rate'], self.p['channels'],
                          self.p['block'], self.p['loop'])

    def read_device(self, driver):
        """Read one block as an AudioChunk stamped at its first sample."""
        block = driver.read()
        if block is None:
            return None
        now = self.get_clock().now()
        msg = AudioChunk(encoding='S16LE', sample_rate=driver.rate, channels=driver.channels,
                         data=np.ascontiguousarray(block, '<i2').tobytes())
        first = now.nanoseconds - int(len(block) / driver.rate * 1e9)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(max(0, first), 10**9)
        msg.header.frame_id = self.driver_frame
        return msg

    def destroy_node(self):
        """Flush a pending utterance, stop ASR, destroy."""
        if self.recognizer is not None:
            self._asr_pool.shutdown(wait=False, cancel_futures=True)
        return super().destroy_node()


class ImuNode(SensorNode):
    """imu/data_raw (topic, MPU-6050/9250 on I2C or a serial IMU) -> sage/features/imu."""

    modality, raw_type, raw_topic = 'imu', Imu, 'imu/data_raw'
    default_frame = 'imu_link'
    default_qos_depth = 100          # 0.1 s at 1 kHz
    extra_params = [
        Param('driver', 'mpu6050', 'hardware driver for source=device',
              choices=('mpu6050', 'serial')),
        Param('device', '/dev/i2c-1', 'I2C bus (/dev/i2c-N or N) or serial port'),
        Param('i2c_address', 0x68, 'I2C address of the MPU (0x68, or 0x69 with AD0 high)',
              low=0x03, high=0x77),
        Param('baud', 115200, 'serial baud rate', low=1200, high=4000000),
        Param('rate_hz', 100.0, 'sampling rate of the I2C driver', low=1.0, high=1000.0),
        Param('accel_range_g', 2, 'accelerometer full scale, g: 2, 4, 8 or 16 (saturation '
              'limit)', check=lambda v: None if v in (2, 4, 8, 16) else
              f'accel_range_g must be 2, 4, 8 or 16, got {v}'),
        Param('gyro_range_dps', 250, 'gyro full scale, deg/s: 250, 500, 1000 or 2000 '
              '(saturation limit)', check=lambda v: None if v in (250, 500, 1000, 2000) else
              f'gyro_range_dps must be 250, 500, 1000 or 2000, got {v}'),
        Param('calibration_samples', 200, 'gyro-bias samples averaged at start (at rest)',
              low=0, high=10000),
        Param('orientation', False, 'append the Madgwick orientation quaternion (w, x, y, z) '
              'to the feature (changes its length: off for the shipped models)'),
        Param('max_bias_drift', 0.05, 'gyro bias drift at rest (rad/s) that takes trust to 0',
              low=1e-4, high=10.0),
        Param('max_feature_hz', 100.0, 'most features published per second of sensor time; '
              'every sample still updates the window, bias and orientation (0: one per '
              'sample)', low=0.0, high=100000.0),
    ]

    def __init__(self, **kwargs):
        super().__init__('imu', **kwargs)
        self._cov = ([0.0] * 9, [0.0] * 9)    # REP-145: zeros = unknown until calibrated
        self._period, self._next = 1.0 / self.p['rate_hz'], time.monotonic()
        self.start()

    def make_sensing(self):
        """IMU sensing with the configured ranges, drift limit and feature rate."""
        return ImuSensing(config_from(self.p, ImuConfig))

    def sense(self, msg, stamp_s, now_s):
        """Sense one sample (None while the feature rate cap holds it back)."""
        a, g = msg.linear_acceleration, msg.angular_velocity
        return self.sensing.step([a.x, a.y, a.z], [g.x, g.y, g.z], stamp_s, now_s)

    def open_device(self):
        """Open and configure the IMU; calibrate the gyro bias at rest."""
        from sage_sensors.imu import ImuDeviceError, Mpu6050, SerialImu, list_i2c_buses
        dev = self.p['device']
        if self.p['driver'] == 'serial':
            return SerialImu(dev, self.p['baud'])
        import smbus2
        bus_id = int(dev.rsplit('-', 1)[-1]) if dev.rsplit('-', 1)[-1].isdigit() else dev
        try:
            bus = smbus2.SMBus(bus_id)
        except (OSError, FileNotFoundError) as exc:
            raise ImuDeviceError(f'cannot open I2C bus {dev} ({exc}); {list_i2c_buses()}') \
                from exc
        try:
            mpu = Mpu6050(bus, self.p['i2c_address'], self.p['accel_range_g'],
                          self.p['gyro_range_dps'])
            self.calibrate(mpu)
        except Exception:
            bus.close()
            raise
        mpu.close = bus.close
        return mpu

    def calibrate(self, mpu) -> None:
        """Gyro bias and noise covariances from samples at rest (REP-145 covariances)."""
        n = self.p['calibration_samples']
        if n:
            mpu.calibrate(n, 1.0 / self.p['rate_hz'])
            samples = np.array([np.concatenate(mpu.read()[:2]) for _ in range(min(n, 50))])
            var = samples.var(axis=0)
            self._cov = (np.diag(var[3:]).ravel().tolist(), np.diag(var[:3]).ravel().tolist())

    def read_device(self, driver):
        """Read one sample as a REP-145 sensor_msgs/Imu (no orientation)."""
        if hasattr(driver, 'gyro_bias'):      # I2C: poll at rate_hz
            delay = self._next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._next = max(self._next, time.monotonic() - 1.0) + self._period
        accel, gyro, _ = driver.read()
        msg = Imu()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.driver_frame
        msg.orientation_covariance[0] = -1.0     # REP-145: orientation not provided
        (msg.angular_velocity.x, msg.angular_velocity.y, msg.angular_velocity.z) = map(
            float, gyro)
        (msg.linear_acceleration.x, msg.linear_acceleration.y,
         msg.linear_acceleration.z) = map(float, accel)
        msg.angular_velocity_covariance, msg.linear_acceleration_covariance = self._cov
        return msg


def camera_main(args=None):
    """Run the camera node."""
    from sage_ros.common import run_node
    raise SystemExit(run_node(CameraNode, args))


def microphone_main(args=None):
    """Run the microphone node."""
    from sage_ros.common import run_node
    raise SystemExit(run_node(MicrophoneNode, args))


def imu_main(args=None):
    """Run the IMU node."""
    from sage_ros.common import run_node
    raise SystemExit(run_node(ImuNode, args))
