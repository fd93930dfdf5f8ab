"""Sensor nodes in a real rclpy graph: raw in, Feature out, trust falls when input degrades."""

import numpy as np
import pytest
from sage_ros.image_conv import numpy_to_image
from sage_testing.graph import Graph
from sage_msgs.msg import AudioChunk, Detection2DArray, Feature
from sage_sensors.features import AudioFeatures, ImuFeatures, VisionFeatures
from sage_sensors.sensor_nodes import CameraNode, ImuNode, MicrophoneNode
from sensor_msgs.msg import CameraInfo, Image, Imu, LaserScan


def real_image():
    from sage_sim.world import World
    return World(seed=0).reset(3).image


def publish_until(g, pub, make, got, n, timeout=10.0):
    def step():
        pub.publish(make())
        return len(got) >= n
    return g.wait_for(step, timeout)


def test_camera_node_trust_falls_for_black_and_frozen_frames():
    with Graph() as g:
        g.add(CameraNode(context=g.context))
        got = g.collect(Feature, 'sage/features/vision')
        pub = g.publisher(Image, 'camera/image_raw')
        rng = np.random.default_rng(0)
        base = real_image()

        def live():
            img = np.clip(base.astype(int) + rng.integers(-3, 4, base.shape), 0, 255)
            return numpy_to_image(img.astype(np.uint8), 'rgb8')
        assert publish_until(g, pub, live, got, 5)
        good = got[-1]
        assert good.modality == 'vision' and len(good.data) == VisionFeatures.DIM
        assert good.trust > 0.8
        n = len(got)
        assert publish_until(g, pub, lambda: numpy_to_image(np.zeros_like(base), 'rgb8'), got,
                             n + 3)
        assert got[-1].trust < 0.2
        frozen = live()
        n = len(got)
        assert publish_until(g, pub, lambda: frozen, got, n + 6)
        assert got[-1].trust < 0.2 and 'frozen' in got[-1].quality_names


def test_camera_node_drops_bad_images_and_keeps_running():
    with Graph() as g:
        node = g.add(CameraNode(context=g.context))
        got = g.collect(Feature, 'sage/features/vision')
        pub = g.publisher(Image, 'camera/image_raw')
        bad = Image(height=10, width=10, encoding='yuv422', step=20, data=bytes(200))
        short = Image(height=10, width=10, encoding='rgb8', step=30, data=bytes(20))
        for msg in (bad, short):
            pub.publish(msg)
        g.wait_for(lambda: node.dropped >= 2, 5)
        assert node.dropped >= 2 and not got
        assert publish_until(g, pub, lambda: numpy_to_image(real_image(), 'bgr8'), got, 1)


def test_camera_node_detects_the_worlds_objects_where_they_are():
    import math
    from sage_sim.world import World
    world = World(seed=0)
    obs = world.reset(0)           # red, yellow and a pillar in view
    truth = {t['name']: t for t in world.visible_objects(min_columns=3)}
    assert len(truth) == 3, truth
    f = 80.0 / math.tan(math.radians(45))
    info = CameraInfo(width=160, height=120, k=[f, 0.0, 80.0, 0.0, f, 60.0, 0.0, 0.0, 1.0])
    with Graph() as g:
        node = g.add(CameraNode(context=g.context))
        got = g.collect(Detection2DArray, 'sage/detections')
        scans = g.collect(LaserScan, 'camera/scan')
        pub = g.publisher(Image, 'camera/image_raw')
        pub_info = g.publisher(CameraInfo, 'camera/camera_info')
        image = numpy_to_image(obs.image, 'rgb8')
        image.header.frame_id = 'camera_optical_frame'
        # frames before any camera_info: no intrinsics, no detections (and a warning)
        assert g.wait_for(lambda: pub.publish(image) or node.received >= 2, 10)
        assert not got

        def both():
            pub_info.publish(info)
            return image
        assert publish_until(g, pub, both, got, 2)
        found = {d.class_id: d for d in got[-1].detections}
        assert set(truth) <= set(found), (truth, found)
        for name, t in truth.items():
            d = found[name]
            assert abs(d.bearing - t['bearing']) < 0.1 and abs(d.range - t['range']) < 0.5
            assert 0 < d.score <= 1 and d.range_variance > 0 and d.bearing_variance > 0
        assert got[-1].header.frame_id == 'camera_optical_frame'
        assert g.wait_for(lambda: scans, 5)
        scan = scans[-1]                 # the first surface per column, angles increasing
        assert len(scan.ranges) == 160 and scan.angle_increment > 0
        assert abs(scan.angle_min + math.pi / 4) < 0.02 and scan.header.frame_id == 'camera_link'
        ok = np.isfinite(scan.ranges)
        assert ok.mean() > 0.9 and 0.1 < np.nanmin(scan.ranges) < np.nanmax(scan.ranges) < 10
        pub_info.publish(CameraInfo(width=160, height=120, k=[float('nan')] * 9))
        n = len(got)
        assert publish_until(g, pub, lambda: image, got, n + 2)   # a bad K is ignored
        assert got[-1].detections


def test_microphone_node_trust_falls_on_dropouts_and_clipping():
    with Graph() as g:
        g.add(MicrophoneNode(context=g.context))
        got = g.collect(Feature, 'sage/features/audio')
        pub = g.publisher(AudioChunk, 'audio/chunk')
        rng = np.random.default_rng(1)

        def chunk(samples):
            return AudioChunk(encoding='S16LE', sample_rate=16000, channels=1,
                              data=samples.astype('<i2').tobytes())
        speech_like = (3000 * np.sin(np.arange(1600) * 0.2) + rng.normal(0, 300, 1600))
        assert publish_until(g, pub, lambda: chunk(speech_like), got, 3)
        assert got[-1].trust > 0.8 and len(got[-1].data) == AudioFeatures.DIM
        n = len(got)
        assert publish_until(g, pub, lambda: chunk(np.zeros(1600)), got, n + 2)
        assert got[-1].trust == 0.0
        n = len(got)
        clipped = np.clip(speech_like * 40, -32767, 32767)
        assert publish_until(g, pub, lambda: chunk(clipped), got, n + 2)
        assert got[-1].trust < 0.5


@pytest.mark.parametrize('saturate', [False, True])
def test_imu_node_trust_falls_when_saturated(saturate):
    with Graph() as g:
        g.add(ImuNode(context=g.context))
        got = g.collect(Feature, 'sage/features/imu')
        pub = g.publisher(Imu, 'imu/data_raw')
        rng = np.random.default_rng(2)

        def sample():
            m = Imu()
            m.linear_acceleration.z = 9.81 + rng.normal(0, 0.05)
            m.angular_velocity.z = 4.36 if saturate else rng.normal(0, 0.01)
            return m
        assert publish_until(g, pub, sample, got, 12)
        assert len(got[-1].data) == ImuFeatures.DIM
        assert (got[-1].trust < 0.5) == saturate
