"""`sage record` / `sage replay` and the bag library, on real images and real processes."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import skimage.data
from rclpy.serialization import deserialize_message, serialize_message
from sage_interop.bag import BagError, play, read, Recorder
from sage_ros.image_conv import numpy_to_image
from sage_testing.graph import Graph
from sage_msgs.msg import Feature
from sensor_msgs.msg import Image

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))


def frames(n_sharp=12, n_blurred=12, size=(120, 160)):
    """Real photographs (skimage.data), resized, then the same ones defocused."""
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(),
              skimage.data.rocket()]
    out = []
    for i in range(n_sharp + n_blurred):
        img = photos[i % len(photos)]
        ys = np.linspace(0, img.shape[0] - 1, size[0]).astype(int)
        xs = np.linspace(0, img.shape[1] - 1, size[1]).astype(int)
        img = img[ys][:, xs].astype(np.float32)
        if i >= n_sharp:                               # a defocused lens
            k = 4
            pad = np.pad(img, ((k, k), (k, k), (0, 0)), mode='edge')
            img = sum(pad[dy:dy + size[0], dx:dx + size[1]] for dy in range(2 * k + 1)
                      for dx in range(2 * k + 1)) / (2 * k + 1) ** 2
        out.append(img.astype(np.uint8))
    return out


def write_bag(path, storage='mcap', hz=10.0):
    rec = Recorder(str(path), storage)
    rec.add_topic('/camera/image_raw', 'sensor_msgs/msg/Image')
    for i, img in enumerate(frames()):
        msg = numpy_to_image(img, 'rgb8')
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(1e9 * (100 + i / hz)),
                                                                1_000_000_000)
        rec.write('/camera/image_raw', serialize_message(msg), int(1e9 * (100 + i / hz)))
    rec.close()
    return rec


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_bags_round_trip_any_type(tmp_path, storage):
    rec = Recorder(str(tmp_path / 'bag'), storage)
    rec.add_topic('/camera/image_raw', 'sensor_msgs/msg/Image')
    rec.add_topic('/sage/features/vision', 'sage_msgs/msg/Feature')
    img = numpy_to_image(frames(1, 0)[0], 'rgb8')
    feature = Feature(modality='vision', data=[1.0, 2.0], trust=0.5)
    rec.write('/camera/image_raw', serialize_message(img), 10)
    rec.write('/sage/features/vision', serialize_message(feature), 20)
    rec.close()
    got = list(read(str(tmp_path / 'bag')))
    assert [(t, s) for t, _, s, _ in got] == [('/camera/image_raw', 10),
                                              ('/sage/features/vision', 20)]
    assert deserialize_message(got[0][3], Image).data == img.data
    back = deserialize_message(got[1][3], Feature)
    assert back.modality == 'vision' and list(back.data) == [1.0, 2.0]
    with pytest.raises(BagError, match='never overwritten'):
        Recorder(str(tmp_path / 'bag'), storage)
    with pytest.raises(BagError, match='none of the topics'):
        list(read(str(tmp_path / 'bag'), ['/nope']))


def test_play_keeps_the_bag_timing(tmp_path):
    write_bag(tmp_path / 'bag', hz=10.0)
    stamps, t0 = [], time.monotonic()
    sent = play(str(tmp_path / 'bag'), lambda *a: stamps.append(time.monotonic() - t0),
                rate=4.0)
    assert sent == 24
    assert stamps[-1] == pytest.approx(23 / 10 / 4, abs=0.15)   # 2.3 s of bag at 4x


def test_replay_through_the_camera_node_and_trust_falls_on_blur(tmp_path):
    write_bag(tmp_path / 'bag')
    env = dict(os.environ)
    log = open(tmp_path / 'graph.log', 'w')
    graph = subprocess.Popen(['sage', 'run', '--source', 'bag', '--only', 'camera',
                              '--duration', '150'], env=env, stdout=log, stderr=log)
    try:
        with Graph() as g:
            got = g.collect(Feature, 'sage/features/vision', 10)
            # a cold first start (bytecode compiled, torch imported) can take a minute here
            assert g.wait_for(lambda: g.probe.count_subscribers('/camera/image_raw') > 0, 100), \
                'the camera node did not start'
            assert g.wait_for(lambda: g.probe.count_publishers('/sage/features/vision') > 0, 30)
            time.sleep(1.0)                                   # discovery settles both ways
            # half speed: a cold node may drop best-effort frames while it warms up
            out = subprocess.run(['sage', 'replay', str(tmp_path / 'bag'), '--rate', '0.5'],
                                 env=env, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert 'replayed 24 messages' in out.stdout
            assert g.wait_for(lambda: len(got) >= 12, 10), f'{len(got)} features'
        # frames are told apart by their stamps (bag time 100 s + i / 10 Hz; 12 sharp first)
        t = np.array([f.header.stamp.sec + f.header.stamp.nanosec * 1e-9 for f in got])
        trust = np.array([f.trust for f in got])
        sharp, blurred = trust[t < 101.15], trust[t > 101.35]
        assert len(sharp) >= 3 and len(blurred) >= 3
        assert sharp.mean() > blurred.mean() + 0.3                    # defocus is noticed
    finally:
        graph.terminate()
        try:
            assert graph.wait(30) == 0
        finally:
            print(open(tmp_path / 'graph.log').read())
    bad = subprocess.run(['sage', 'replay', str(tmp_path / 'missing')], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and 'no rosbag2 directory' in bad.stderr


LISTENER = """
import rclpy
from sensor_msgs.msg import Image
from sage_ros.common import qos_from_name
rclpy.init()
node = rclpy.create_node('listener')
node.create_subscription(Image, '/camera/image_raw', lambda m: None,
                         qos_from_name('SENSOR_DATA'))
rclpy.spin(node)
"""


def test_replay_ends_with_an_error_when_the_graph_it_feeds_dies(tmp_path):
    write_bag(tmp_path / 'bag')
    listener = subprocess.Popen([sys.executable, '-c', LISTENER])
    try:
        replay = subprocess.Popen(['sage', 'replay', str(tmp_path / 'bag'), '--loop',
                                   '--wait', '30'], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        line = replay.stdout.readline()
        assert '1/1 topics have subscribers' in line, line
        time.sleep(2.0)
        listener.kill()
        killed = time.monotonic()
        _, stderr = replay.communicate(timeout=60)
        assert time.monotonic() - killed < 15.0, 'replay noticed too late'
        assert replay.returncode == 1 and 'every subscriber left' in stderr, stderr
    finally:
        listener.kill()
        listener.wait()


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_sage_record_writes_a_bag_of_the_running_graph(tmp_path, storage):
    from sage_ros.common import qos_from_name
    from std_msgs.msg import String
    bag = tmp_path / 'rec'
    ns = f'/rec_{os.getpid()}_{storage}'      # its own namespace: no other graph leaks in
    with Graph() as g:
        # published before the recorder starts: a latched topic must still be recorded
        g.publisher(String, f'{ns}/sage/instruction', qos_from_name('LATCHED')).publish(
            String(data='go forward ten meters'))
        camera = g.publisher(Image, f'{ns}/camera/image_raw', qos_from_name('SENSOR_DATA'))
        vision = g.publisher(Feature, f'{ns}/sage/features/vision')
        rec = subprocess.Popen(['sage', 'record', '-o', str(bag), '--storage', storage,
                                '--namespace', ns, '--duration', '6', 'camera/image_raw',
                                'sage/instruction', 'sage/features/vision'],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        img = numpy_to_image(frames(1, 0)[0], 'rgb8')
        deadline = time.monotonic() + 30
        while rec.poll() is None and time.monotonic() < deadline:
            camera.publish(img)
            vision.publish(Feature(modality='vision', data=[0.5], trust=0.25))
            time.sleep(0.1)
        out, err = rec.communicate(timeout=30)
    assert rec.returncode == 0, err
    assert 'wrote' in out and '3/3 topics' in out
    got = {}
    for topic, msgtype, _, data in read(str(bag)):
        got.setdefault(topic, []).append((msgtype, data))
    assert set(got) == {f'{ns}/camera/image_raw', f'{ns}/sage/instruction',
                        f'{ns}/sage/features/vision'}
    assert deserialize_message(got[f'{ns}/camera/image_raw'][0][1], Image).data == img.data
    assert deserialize_message(got[f'{ns}/sage/features/vision'][0][1], Feature).trust == 0.25
    assert deserialize_message(got[f'{ns}/sage/instruction'][0][1], String).data == \
        'go forward ten meters'
    again = subprocess.run(['sage', 'record', '-o', str(bag), '--duration', '1'],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and 'never overwritten' in again.stderr


@pytest.mark.timeout(300)
def test_an_independent_reader_decodes_every_topic_sage_records(tmp_path):
    """mcap + mcap-ros2-support (not rosbags, not rclpy) read a `sage record` bag of the
    running default graph: every channel's schema, SAGE's own messages included."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    env = dict(os.environ, SAGE_HOME=str(tmp_path / 'home'))
    assert subprocess.run(['sage', 'init'], env=env, capture_output=True).returncode == 0
    params = tmp_path / 'params.yaml'
    params.write_text(open(os.path.join(ROOT, 'config', 'sage.yaml')).read().replace(
        'time_limit_s: 40.0', 'time_limit_s: 6.0'))          # an episode ends while recording
    graph = subprocess.Popen(['sage', 'run', '--params-file', str(params), '--duration', '60'],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with Graph() as g:
            coherence = g.collect(Feature, 'sage/features/vision')
            assert g.wait_for(lambda: coherence, 120), 'the graph did not start'
        bag = tmp_path / 'day'
        rec = subprocess.run(['sage', 'record', '-o', str(bag), '--duration', '12'], env=env,
                             capture_output=True, text=True, timeout=120)
        assert rec.returncode == 0, rec.stderr
    finally:
        graph.terminate()
        graph.wait(60)
    files = list(bag.glob('*.mcap'))
    assert len(files) == 1
    decoded: dict = {}
    with open(files[0], 'rb') as f:
        for schema, channel, _, msg in make_reader(
                f, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            decoded.setdefault(channel.topic, (schema.name, msg))
    assert len(decoded) >= 18, sorted(decoded)
    name, feature = decoded['/sage/features/vision']
    assert name == 'sage_msgs/msg/Feature' and feature.modality == 'vision'
    assert 0.0 <= feature.trust <= 1.0 and len(feature.data) == 68
    assert decoded['/camera/image_raw'][1].encoding == 'rgb8'
    assert decoded['/sage/coherence'][0] == 'sage_msgs/msg/Coherence'
    assert decoded['/cmd_vel'][0] == 'geometry_msgs/msg/TwistStamped'
