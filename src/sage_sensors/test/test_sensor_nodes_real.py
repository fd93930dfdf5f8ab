"""Sensor nodes in a real rclpy graph on real data: drivers, encoders, ASR, trust, failures."""

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.parameter import Parameter
from sage_ros.image_conv import numpy_to_image
from sage_ros.common import qos_from_name
from sage_testing.graph import Graph
from sage_msgs.msg import AudioChunk, Feature
from sage_testing import realdata
from sage_sensors.encoder import FrameEncoder
from sage_sensors.features import AudioFeatures, ImuFeatures, VisionFeatures
from sage_sensors.sensor_nodes import CameraNode, ImuNode, MicrophoneNode
from sensor_msgs.msg import CameraInfo, Image, Imu
from std_msgs.msg import String

SENSOR = qos_from_name('SENSOR_DATA')   # drivers publish raw data best-effort


def params(**kw):
    return [Parameter(k, value=v) for k, v in kw.items()]


def feed(g, pub, msgs, got, n_more, timeout=60.0):
    """Publish ``msgs`` in a cycle until ``n_more`` new messages arrive in ``got``.

    The publisher polls at ~50 Hz, so 300 messages take 6 s idle and longer on a
    loaded 2-core CI machine: the timeout only bounds a node that stopped."""
    start, i = len(got), [0]

    def step():
        pub.publish(msgs[i[0] % len(msgs)])
        i[0] += 1
        return len(got) >= start + n_more
    assert g.wait_for(step, timeout), f'only {len(got) - start} of {n_more} arrived'
    return got[start:]


def is_error(status):
    return status.level == DiagnosticStatus.ERROR


def last_status(diags, name):
    for arr in reversed(diags):
        for st in arr.status:
            if st.name.endswith(name):
                return st
    return None


def test_camera_drives_video_file_with_encoder_and_publishes_image_and_info(tmp_path):
    frames = []
    cap = cv2.VideoCapture(realdata.video_path())
    while len(frames) < 60:
        frames.append(cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB))
    enc = FrameEncoder(latent=16)
    enc.fit(frames[::2], epochs=8, time_limit_s=20)
    enc.save(str(tmp_path / 'enc.pt'))
    with Graph() as g:
        g.add(CameraNode(context=g.context, parameter_overrides=params(
            source='device', device=realdata.video_path(), fps=20.0,
            encoder=str(tmp_path / 'enc.pt'), encoder_latent=16)))
        images = g.collect(Image, 'camera/image_raw', SENSOR)
        infos = g.collect(CameraInfo, 'camera/camera_info', SENSOR)
        got = g.collect(Feature, 'sage/features/vision')
        assert g.wait_for(lambda: len(got) >= 5 and images and infos, 15)
        f = got[-1]
        assert len(f.data) == VisionFeatures.DIM + 16 and f.trust > 0.5
        q = dict(zip(f.quality_names, f.quality_values))
        assert q['encoder_loaded'] == 1.0 and q['recon_error_ratio'] < 2.0
        assert images[0].encoding == 'rgb8' and (images[0].width, images[0].height) == (768, 576)
        assert images[0].header.frame_id == 'camera_optical_frame'
        assert infos[0].width == 768 and infos[0].header.frame_id == 'camera_optical_frame'


def test_camera_trust_falls_for_blurred_and_black_photographs():
    photo = realdata.images(('astronaut',))['astronaut']
    sharp = numpy_to_image(photo, 'rgb8')
    blurred = numpy_to_image(cv2.GaussianBlur(photo, (0, 0), 6), 'rgb8')
    black = numpy_to_image(np.zeros_like(photo), 'rgb8')
    with Graph() as g:
        g.add(CameraNode(context=g.context))
        got = g.collect(Feature, 'sage/features/vision')
        pub = g.publisher(Image, 'camera/image_raw')
        # the first feature: the same photograph again and again is rightly a frozen camera
        # once frozen_after repeats got in, which a slow machine reaches before 3 arrive
        assert feed(g, pub, [sharp], got, 3)[0].trust > 0.8
        assert feed(g, pub, [blurred], got, 2)[-1].trust < 0.5
        assert feed(g, pub, [black], got, 2)[-1].trust < 0.1


def test_missing_camera_reports_error_retries_and_serves_the_topic():
    photo = numpy_to_image(realdata.images(('coffee',))['coffee'], 'bgr8')
    with Graph() as g:
        node = g.add(CameraNode(context=g.context, parameter_overrides=params(
            source='device', device='/dev/video97', retry_period_s=0.2)))
        diags = g.collect(DiagnosticArray, 'diagnostics')
        got = g.collect(Feature, 'sage/features/vision')
        pub = g.publisher(Image, 'camera/image_raw')
        feed(g, pub, [photo], got, 2)
        bad = Image(height=10, width=10, encoding='rgb8', step=30, data=bytes(20))
        pub.publish(bad)
        assert g.wait_for(lambda: node.dropped >= 1, 5)

        def error_seen():
            st = last_status(diags, 'camera')
            return st is not None and is_error(st) and 'video devices' in st.message
        assert g.wait_for(error_seen, 5)
        assert 'serving camera/image_raw' in last_status(diags, 'camera').message


def test_microphone_plays_speech_file_recognises_it_and_reports_missing_devices():
    with Graph() as g:
        g.add(MicrophoneNode(context=g.context, parameter_overrides=params(
            source='device', device=realdata.speech_wav(), asr=True, loop=True)))
        said = g.collect(String, 'sage/instruction')
        chunks = g.collect(AudioChunk, 'audio/chunk', SENSOR)
        got = g.collect(Feature, 'sage/features/audio')
        assert g.wait_for(lambda: said, 12)
        assert said[0].data == realdata.SPEECH_TEXT
        assert chunks[0].sample_rate == 16000 and len(chunks[0].data) == 640
        f = got[-1]
        assert len(f.data) == AudioFeatures.DIM and 'voice_prob' in f.quality_names
        g.add(MicrophoneNode(context=g.context, node_name='mic2', parameter_overrides=params(
            source='device', device='no such microphone', retry_period_s=0.2)))
        diags = g.collect(DiagnosticArray, 'diagnostics')

        def error_seen():
            st = last_status(diags, 'mic2')
            return st is not None and is_error(st) and 'input devices' in st.message
        assert g.wait_for(error_seen, 5)


def test_microphone_trust_falls_for_clipped_and_noisy_speech():
    pcm = realdata.read_wav(realdata.speech_wav())[0][:, 0].astype(np.float64)
    speech = pcm[8000:8000 + 16000]        # a second inside the utterance

    def chunks(x):
        x = np.clip(x, -32767, 32767).astype('<i2')
        return [AudioChunk(encoding='S16LE', sample_rate=16000, channels=1,
                           data=x[i:i + 320].tobytes()) for i in range(0, len(x), 320)]
    rng = np.random.default_rng(0)
    with Graph() as g:
        g.add(MicrophoneNode(context=g.context, parameter_overrides=params(
            extended_features=True)))
        got = g.collect(Feature, 'sage/features/audio')
        pub = g.publisher(AudioChunk, 'audio/chunk')
        clean = feed(g, pub, chunks(speech), got, 20)
        assert len(clean[-1].data) == AudioFeatures.DIM + 41
        assert np.median([f.trust for f in clean]) > 0.8
        clipped = feed(g, pub, chunks(speech * 30), got, 10)
        assert np.median([f.trust for f in clipped]) < 0.5
        noisy = feed(g, pub, chunks(speech + rng.normal(0, 6000, len(speech))), got, 200)
        assert np.median([f.trust for f in noisy[-20:]]) < 0.5
        clean = feed(g, pub, chunks(speech), got, 200)     # the floor recovers
        assert np.median([f.trust for f in clean[-20:]]) > 0.8


def imu_msgs(accel, gyro):
    out = []
    for a, w in zip(accel, gyro):
        m = Imu()
        m.orientation_covariance[0] = -1.0
        m.linear_acceleration.x, m.linear_acceleration.y, m.linear_acceleration.z = map(float, a)
        m.angular_velocity.x, m.angular_velocity.y, m.angular_velocity.z = map(float, w)
        out.append(m)
    return out


@pytest.mark.parametrize('range_dps', [2000, 250])
def test_imu_node_real_walk_trust_falls_when_saturated(range_dps):
    rec = realdata.imu_recordings()['walking_xsens_lowerLeg']
    limit = np.radians(range_dps)   # a shank swings at up to ~315 deg/s: ±250 saturates
    walk = imu_msgs(rec.accel[1000:1600], np.clip(rec.gyro[1000:1600], -limit, limit))
    with Graph() as g:
        node = g.add(ImuNode(context=g.context, parameter_overrides=params(
            accel_range_g=16, gyro_range_dps=range_dps, orientation=True)))
        got = g.collect(Feature, 'sage/features/imu')
        pub = g.publisher(Imu, 'imu/data_raw')
        out = feed(g, pub, walk, got, 300)
        assert len(out[-1].data) == ImuFeatures.DIM + 4
        low = np.mean([f.trust < 0.5 for f in out])
        assert (low > 0.05) if range_dps == 250 else (low < 0.01)
        pub.publish(imu_msgs([[np.nan, 0, 9.8]], [[0, 0, 0]])[0])
        assert g.wait_for(lambda: node.dropped >= 1, 5)


def test_imu_node_without_i2c_bus_reports_what_exists():
    with Graph() as g:
        g.add(ImuNode(context=g.context, parameter_overrides=params(
            source='device', device='/dev/i2c-97', retry_period_s=0.2)))
        diags = g.collect(DiagnosticArray, 'diagnostics')

        def error_seen():
            st = last_status(diags, 'imu')
            return st is not None and is_error(st) and 'I2C buses' in st.message
        assert g.wait_for(error_seen, 5)
