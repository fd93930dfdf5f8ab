"""The memory node in a real rclpy graph, and killed with -9 as a real process."""

import glob
import os
import resource
import signal
import subprocess
import time

import numpy as np
from ament_index_python.packages import get_package_prefix
from rclpy.parameter import Parameter
from sage_testing.graph import Graph
from sage_memory.memory_node import MemoryNode
from sage_memory.sidecar import Sidecar
from sage_memory.store import ExperienceStore
from sage_msgs.msg import Action, Feature, Salience
from sage_msgs.srv import Recall, Snapshot
from std_msgs.msg import Float32

DIMS = {'vision': 6, 'imu': 4}


def params(tmp_path, **extra):
    return {'modalities': list(DIMS), 'dims': list(DIMS.values()), 'rate_hz': 20.0,
            'store_path': str(tmp_path / 'exp.db'), 'sidecar_path': str(tmp_path / 'side.npz'),
            'key_dim': 32, 'slots': 16, 'spatial_path': str(tmp_path / 'spatial.npz'),
            **extra}


def feeder(g):
    pubs = {m: g.publisher(Feature, f'sage/features/{m}') for m in DIMS}
    rng = np.random.default_rng(0)

    def feed(bad=None):
        for m, pub in pubs.items():
            data = rng.normal(size=DIMS[m]).astype(np.float32).tolist()
            if bad == 'nan':
                data[0] = float('nan')
            elif bad == 'length':
                data = data + [0.0]
            msg = Feature(modality=m, trust=0.9, data=data)
            msg.header.stamp = g.probe.get_clock().now().to_msg()
            pub.publish(msg)
    return feed


def call(g, srv_type, name, request, timeout=10.0):
    client = g.probe.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=timeout), f'{name} not offered'
    future = client.call_async(request)
    assert g.wait_for(future.done, timeout)
    return future.result()


def test_scores_remembers_stores_and_rejects_bad_features(tmp_path):
    with Graph() as g:
        node = g.add(MemoryNode(context=g.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in params(tmp_path).items()]))
        salience = g.collect(Salience, 'sage/salience')
        memory = g.collect(Feature, 'sage/features/memory')
        feed = feeder(g)
        reward = g.publisher(Float32, 'sage/reward')
        action = g.publisher(Action, 'sage/action')
        teacher = g.publisher(Action, 'sage/teacher_action')
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            feed()
            action.publish(Action(discrete_id=1))
            teacher.publish(Action(discrete_id=2))
            reward.publish(Float32(data=0.5))
            time.sleep(0.03)
        assert g.wait_for(lambda: len(salience) > 10 and memory)
        s = salience[-1]
        scores = (s.surprise, s.novelty, s.arousal, s.reward, s.conflict, s.total)
        assert all(0 <= v <= 1 for v in scores)
        assert max(m.conflict for m in salience) == 1.0      # action != teacher
        assert len(memory[-1].data) == sum(DIMS.values()) and 0 <= memory[-1].trust <= 1
        assert node.store.count() > 0
        before = node.sidecar.writes
        for bad in ('nan', 'length'):
            feed(bad)
        assert g.wait_for(lambda: node.rejected >= 4)
        assert node.sidecar.writes >= before               # still running
        got = call(g, Recall, 'sage/memory/recall', Recall.Request(query=[]))
        assert got.success and len(got.recalled) == 10 and 0 <= got.score <= 1
        bad = call(g, Recall, 'sage/memory/recall', Recall.Request(query=[1.0, 2.0]))
        assert not bad.success and 'bad query' in bad.message
        snap = call(g, Snapshot, 'sage/memory/snapshot', Snapshot.Request(path=''))
        assert snap.success and Sidecar.load(snap.path).writes > 0


def test_camera_frames_are_stored_with_salient_steps(tmp_path):
    from sage_ros.image_conv import numpy_to_image
    from sage_ros.common import qos_from_name
    from sensor_msgs.msg import Image
    from skimage import data
    photo = data.chelsea()                            # a real photograph, 300x451
    with Graph() as g:
        node = g.add(MemoryNode(context=g.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in params(tmp_path, frame_period_s=0.2).items()]))
        feed = feeder(g)
        camera = g.publisher(Image, 'camera/image_raw', qos_from_name('SENSOR_DATA'))
        bad = numpy_to_image(photo, 'rgb8')
        bad.encoding = 'mono16'                       # wrong for its size: refused, counted
        camera.publish(bad)

        def fed():
            feed()
            camera.publish(numpy_to_image(photo[:, :, ::-1].copy(), 'bgr8'))
            return node.frames_stored >= 3
        assert g.wait_for(fed, 15), f'{node.frames_stored} frames stored'
        steps = node.stored
    store = ExperienceStore(str(tmp_path / 'exp.db'))
    frames = store.sample_frames(10, np.random.default_rng(0))
    assert 3 <= len(frames) < steps                   # at most one per frame_period_s
    frame = frames[0][1]
    assert frame.shape == (106, 160, 3)               # shrunk to 160 px, aspect kept
    assert frame[..., 0].mean() > frame[..., 2].mean()   # bgr8 stored as rgb: the cat is warm


def test_salience_gates_the_store_labels_expire_and_diagnostics_report(tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    extra = {'store_threshold': 0.5, 'weights': [0.0, 0.0, 0.0, 1.0, 0.0],  # reward only
             'label_timeout_s': 0.2}
    with Graph() as g:
        node = g.add(MemoryNode(context=g.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in params(tmp_path, **extra).items()]))
        salience = g.collect(Salience, 'sage/salience')
        diags = g.collect(DiagnosticArray, 'diagnostics')
        feed = feeder(g)
        reward = g.publisher(Float32, 'sage/reward')
        teacher = g.publisher(Action, 'sage/teacher_action')

        def phase(done, rewarded, taught, timeout=30.0):
            # phases end on what the node did, not on wall time: a loaded CI
            # machine runs the node's timer slower than the feed
            end = time.monotonic() + timeout
            while not done() and time.monotonic() < end:
                feed()
                if taught:
                    teacher.publish(Action(discrete_id=3))
                if rewarded:
                    reward.publish(Float32(data=1.0))
                time.sleep(0.03)
            assert done(), 'the memory node did not keep up'

        phase(lambda: node.stored >= 8, True, True)            # salient, labelled
        quiet = time.monotonic()
        routine = len(salience)
        phase(lambda: len(salience) >= routine + 5 and time.monotonic() - quiet > 0.6,
              False, False)                                    # routine; the teacher goes quiet
        stored = node.stored
        phase(lambda: node.stored >= stored + 3, True, False)  # salient again, label expired
        assert g.wait_for(lambda: any(v.key == 'write_rate_hz' for d in diags
                                      for st in d.status for v in st.values))
        assert g.wait_for(lambda: sum(m.stored for m in salience) == node.stored)
        rows = [s for ep in node.store.episodes() for s in node.store.episode(ep[0])]
        assert rows and all(r.salience >= 0.5 for r in rows)
        assert len(rows) == node.stored
        assert any(not m.stored for m in salience)              # routine steps were not
        assert all(m.stored == (m.total >= 0.5) for m in salience)
        teachers = [r.teacher for r in rows]
        assert teachers.count(3) >= 5 and teachers[-1] == -1   # no stale labels
        assert rows[-1].features.shape == (sum(DIMS.values()),)  # what sleep reads
        values = {v.key: v.value for st in diags[-1].status for v in st.values}
        assert float(values['fill']) > 0 and float(values['write_rate_hz']) > 0
        assert float(values['last_snapshot_s']) >= 0 and values['store_errors'] == '0'
        key = call(g, Recall, 'sage/memory/recall', Recall.Request(query=[1.0] * 32))
        assert key.success and len(key.recalled) == sum(DIMS.values())   # a key of size d


def _start(tmp_path, log, preexec_fn=None, **extra):
    exe = os.path.join(get_package_prefix('sage_memory'), 'lib', 'sage_memory', 'memory_node')
    args = [exe, '--ros-args']
    for k, v in params(tmp_path, **extra).items():
        v = '[' + ','.join(f"'{x}'" if isinstance(x, str) else str(x) for x in v) + ']' \
            if isinstance(v, list) else v
        args += ['-p', f'{k}:={v}']
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec_fn)


def _writable_files():
    """In the child: writes past RLIMIT_FSIZE fail with EFBIG (a full disk) instead of
    killing the process with SIGXFSZ."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_a_full_disk_is_an_error_on_diagnostics_and_nothing_is_lost(tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    log = open(tmp_path / 'node.log', 'w')
    proc = _start(tmp_path, log, _writable_files, snapshot_period_s=1.0)
    try:
        with Graph() as g:
            feed = feeder(g)
            salience = g.collect(Salience, 'sage/salience')
            diags = g.collect(DiagnosticArray, 'diagnostics')
            assert g.wait_for(lambda: feed() or sum(m.stored for m in salience) > 20, 30), \
                open(tmp_path / 'node.log').read()
            files = [tmp_path / f for f in ('exp.db', 'exp.db-wal', 'side.npz')]
            full = max(f.stat().st_size for f in files if f.exists())
            unlimited = resource.RLIM_INFINITY      # the soft limit only: it comes back later
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (full, unlimited))  # disk full
            before = sum(m.stored for m in salience)

            def error_reported():
                feed()
                st = [s for d in diags for s in d.status if 'memory' in s.name]
                return st and st[-1].level == DiagnosticStatus.ERROR
            assert g.wait_for(error_reported, 30), 'a full disk must be an ERROR'
            n = len(salience)
            assert g.wait_for(lambda: feed() or len(salience) > n + 20, 15)  # still scoring
            assert proc.poll() is None
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (unlimited, unlimited))
            stored = sum(m.stored for m in salience)
            assert g.wait_for(lambda: feed() or sum(m.stored for m in salience) > stored + 10,
                              30), 'writing must resume once there is space'
            announced = sum(m.stored for m in salience)
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
        store = ExperienceStore(str(tmp_path / 'exp.db'))
        assert store.db.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'
        assert store.count() >= announced > before > 0      # nothing stored before is lost
        assert 'experience store write failed' in open(tmp_path / 'node.log').read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_kill_9_loses_nothing_and_a_corrupt_snapshot_is_moved_aside(tmp_path):
    log = open(tmp_path / 'node.log', 'w')
    proc = _start(tmp_path, log, snapshot_period_s=1.0)   # periodic saves while killed
    try:
        with Graph() as g:
            feed = feeder(g)
            salience = g.collect(Salience, 'sage/salience')
            started = g.wait_for(lambda: feed() or len(salience) > 5, 30)
            assert started, open(tmp_path / 'node.log').read()
            snap = call(g, Snapshot, 'sage/memory/snapshot', Snapshot.Request(path=''))
            assert snap.success
            away = call(g, Snapshot, 'sage/memory/snapshot', Snapshot.Request(path='/'))
            assert not away.success and 'not under $SAGE_HOME' in away.message
            first = Sidecar.load(snap.path).writes
            n = len(salience)
            assert g.wait_for(lambda: feed() or len(salience) > n + 40, 15)
            proc.send_signal(signal.SIGKILL)          # while it writes
            proc.wait(10)
            announced = sum(m.stored for m in salience)
        store = ExperienceStore(str(tmp_path / 'exp.db'))
        assert store.db.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'
        assert store.count() >= announced > 0         # every step announced as stored is there
        assert Sidecar.load(str(tmp_path / 'side.npz')).writes > first   # the last periodic one
        from sage_memory.spatial import SpatialMemory
        SpatialMemory.load(str(tmp_path / 'spatial.npz'))   # places: a whole snapshot, too
        with open(tmp_path / 'side.npz', 'r+b') as f:   # corrupt the snapshot
            f.seek(200)
            f.write(b'\x00' * 64)
        corrupted = (tmp_path / 'side.npz').read_bytes()
        (tmp_path / 'side.npz.tmp-999999').write_bytes(b'half a save')   # left by a kill
        proc = _start(tmp_path, log)
        with Graph() as g:
            feed = feeder(g)
            salience = g.collect(Salience, 'sage/salience')
            assert g.wait_for(lambda: feed() or len(salience) > 3, 30), 'node did not recover'
        aside = glob.glob(str(tmp_path / 'side.npz.corrupt-*'))
        assert len(aside) == 1 and open(aside[0], 'rb').read() == corrupted
        assert not os.path.exists(tmp_path / 'side.npz.tmp-999999')
        assert 'sidecar snapshot refused' in open(tmp_path / 'node.log').read()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(15)
    assert os.path.exists(tmp_path / 'side.npz')      # saved again on shutdown


def test_places_are_remembered_queried_mapped_and_saved(tmp_path):
    """World → camera (detections) + odom → memory: "where is red?" has an answer."""
    import math
    from nav_msgs.msg import OccupancyGrid
    from sage_msgs.srv import QueryLandmarks
    from sage_sensors.sensor_nodes import CameraNode
    from sage_sim.world_node import WorldNode
    from sage_ros.common import qos_from_name
    from visualization_msgs.msg import MarkerArray
    with Graph() as g:
        world = g.add(WorldNode(context=g.context, parameter_overrides=[
            Parameter('seed', value=0), Parameter('real_time_factor', value=2.0),
            Parameter('time_limit_s', value=3600.0)]))       # one episode: one arena
        g.add(CameraNode(context=g.context))
        node = g.add(MemoryNode(context=g.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in params(tmp_path, map_period_s=0.5).items()]))
        grids = g.collect(OccupancyGrid, 'sage/memory/map', qos_from_name('LATCHED'))
        markers = g.collect(MarkerArray, 'sage/memory/landmarks')
        truth = {o[4]: o for o in world.world.objects}
        x0, y0, yaw0 = world.world.odom_to_world()    # the robot stands still: odom = start

        def red():
            return call(g, QueryLandmarks, 'sage/memory/query', QueryLandmarks.Request(
                label='red'))
        assert g.wait_for(lambda: any(m.times_seen >= 5 for m in red().landmarks), 30)
        reply = red()
        assert reply.header.frame_id == 'odom' and len(reply.landmarks) == 1
        red = reply.landmarks[0]
        dx, dy = truth['red'][0] - x0, truth['red'][1] - y0
        want = (math.cos(yaw0) * dx + math.sin(yaw0) * dy, -math.sin(yaw0) * dx +
                math.cos(yaw0) * dy)
        assert math.hypot(red.x - want[0], red.y - want[1]) < 0.3, (red, want)
        assert red.covariance[0] > 0 and red.covariance[3] > 0
        near = call(g, QueryLandmarks, 'sage/memory/query', QueryLandmarks.Request(
            x=red.x, y=red.y, radius=0.5))
        assert [m.label for m in near.landmarks][:1] == ['red']
        none = call(g, QueryLandmarks, 'sage/memory/query', QueryLandmarks.Request(
            label='purple'))
        assert not none.landmarks and 'nothing' in none.message
        bad = call(g, QueryLandmarks, 'sage/memory/query', QueryLandmarks.Request(
            radius=float('nan')))
        assert not bad.landmarks and 'refused' in bad.message
        assert g.wait_for(lambda: grids and markers, 10)
        grid = grids[-1]
        assert grid.header.frame_id == 'odom' and grid.info.width == grid.info.height == 64
        assert grid.info.resolution == 0.25 and grid.info.origin.position.x == -8.0
        cells = np.array(grid.data)
        assert (cells == -1).any() and ((cells >= 0) & (cells < 50)).any() and (cells > 65).any()
        assert any(m.text.startswith('red') for m in markers[-1].markers)
        snap = call(g, Snapshot, 'sage/memory/snapshot', Snapshot.Request(path=''))
        assert snap.success and os.path.exists(tmp_path / 'spatial.npz')
        g.remove(node)
        node.destroy_node()                            # saves again on the way out
        again = MemoryNode(context=g.context, node_name='memory_again', parameter_overrides=[
            Parameter(k, value=v) for k, v in params(tmp_path).items()])
        try:
            assert [m.label for m in again.spatial.by_label('red')] == ['red']
        finally:
            again.destroy_node()


def test_an_episode_the_world_holds_out_is_marked_in_the_store(tmp_path):
    import json
    from std_msgs.msg import String
    with Graph() as g:
        node = g.add(MemoryNode(context=g.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in params(tmp_path).items()]))
        episode = g.publisher(String, 'sage/episode')
        episode.publish(String(data=json.dumps({'episode': 3, 'phase': 'work'})))
        episode.publish(String(data=json.dumps({'episode': 4, 'held_out': True})))
        episode.publish(String(data=json.dumps({'episode': 5, 'held_out': 'yes'})))
        assert g.wait_for(lambda: node.memory.episode == 6, 10)
        assert node.store.held_out() == {4}      # only a JSON true marks a measurement
