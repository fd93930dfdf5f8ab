"""Spatial memory: landmarks from detections under odometry drift, the grid, queries, files."""

import math

import numpy as np
import pytest
from sage_common.snapshot import SnapshotError
from sage_memory.spatial import SpatialConfig, SpatialMemory
from sage_sensors.detect import Detection, Detector
from sage_sim.world import ACTIONS, World

F = 80.0          # the world camera's focal length (160 px, 90 degrees)


def drive(seed, steps=200, memory=None):
    """Drive the world (the oracle, with a random action every fourth step), remembering."""
    world, detector = World(seed=0), Detector()
    obs = world.reset(seed)
    memory = memory or SpatialMemory()
    rng, seen = np.random.default_rng(seed), set()
    for step in range(steps):
        seen |= {t['name'] for t in world.visible_objects(3)}
        o = obs.odom
        pose = (o.x, o.y, o.yaw)
        memory.observe(obs.time_s, pose, o.covariance, detector.detect(obs.image, F, F, 80, 60))
        memory.scan(pose, *detector.scan(obs.image, F, F, 80, 60))
        a = world.oracle_action() if step % 4 else int(rng.integers(len(ACTIONS)))
        obs, _, done, _ = world.step(ACTIONS[a][1], ACTIONS[a][2])
        if done:
            break
    return world, memory, seen


def in_odom(world, x, y):
    x0, y0, yaw0 = world.odom_to_world()
    dx, dy = x - x0, y - y0
    return np.array([math.cos(yaw0) * dx + math.sin(yaw0) * dy,
                     -math.sin(yaw0) * dx + math.cos(yaw0) * dy])


def test_landmarks_fuse_under_odometry_drift():
    errors, nees, duplicates = [], [], 0
    for seed in range(12):
        world, memory, seen = drive(seed)
        for x, y, _, _, name in world.objects:
            if name == 'pillar' or name not in seen:
                continue
            found = memory.by_label(name)
            duplicates += len(found) - 1
            e = found[0].mean - in_odom(world, x, y)
            errors.append(float(np.hypot(*e)))
            nees.append(float(e @ np.linalg.solve(found[0].cov, e)))
        pillars = sum(t[4] == 'pillar' for t in world.objects)
        assert len(memory.by_label('pillar')) <= pillars      # association, not a new one each
    assert len(errors) > 25 and duplicates <= 1
    assert np.mean(errors) < 0.3 and max(errors) < 0.8, errors
    # honest covariance: the median of a 2-dof chi-square is 1.39
    assert 0.5 < np.median(nees) < 3.0, np.median(nees)


def test_the_scan_measures_the_first_surface():
    world = World(seed=0)
    obs = world.reset(0)
    _, ranges = Detector().scan(obs.image, F, F, 80, 60)
    ok = np.isfinite(ranges)
    assert ok.mean() > 0.9
    rel = np.abs(ranges[ok] - world.column_range[ok]) / world.column_range[ok]
    assert np.median(rel) < 0.05 and np.mean(rel < 0.15) > 0.9


def test_grid_queries_bounds_and_persistence(tmp_path):
    world, memory, seen = drive(14, steps=60)
    grid = memory.occupancy()
    assert grid.dtype == np.int8 and set(np.unique(grid)) <= set(range(-1, 101))
    col, row = memory.cell(0.0, 0.0)
    assert grid[row, col] < 50                     # the start is floor the robot stood on
    assert (grid > 65).sum() > 20 and (grid == -1).sum() > grid.size // 4   # walls, unknown
    # queries: by label, by place, by time window
    red = memory.by_label('red')
    assert len(red) == 1 and red[0].times_seen > 5
    assert memory.near(*red[0].mean, 0.3)[0] is red[0]
    assert red[0] in memory.seen_between(0.0, 1.0) and not memory.seen_between(-5, -1)
    assert memory.query('red') == red and memory.query('red', since=-5, until=-1) == []
    assert memory.query(near=red[0].mean, radius=0.3)[0] is red[0]
    assert memory.query('blue', near=red[0].mean, radius=0.3) == []
    # persisted atomically, verified, refused when corrupted or of another grid
    path = memory.save(str(tmp_path / 'spatial.npz'))
    back = SpatialMemory.load(path)
    assert [m.label for m in back.landmarks] == [m.label for m in memory.landmarks]
    assert np.array_equal(back.log_odds, memory.log_odds)
    assert np.allclose(back.by_label('red')[0].mean, red[0].mean)
    with pytest.raises(SnapshotError, match='do not fit'):
        SpatialMemory.load(path, SpatialConfig(cell_m=0.5))
    raw = bytearray(open(path, 'rb').read())
    raw[len(raw) // 2] ^= 0xFF                   # inside the grid's bytes
    open(path, 'wb').write(bytes(raw))
    with pytest.raises(SnapshotError):
        SpatialMemory.load(path)
    # bounded: the least seen landmark goes first
    small = SpatialMemory(SpatialConfig(max_landmarks=2))
    det = [Detection(lb, 1.0, 0, 0, 5, 5, b, 1e-4, 2.0, 1e-3)
           for lb, b in (('red', 0.0), ('red', 0.0), ('blue', 0.5), ('green', -0.5))]
    small.observe(1.0, (0, 0, 0), np.eye(3) * 1e-4, det[:3])
    small.observe(2.0, (0, 0, 0), np.eye(3) * 1e-4, det[3:])
    assert sorted(m.label for m in small.landmarks) == ['green', 'red']
    with pytest.raises(ValueError, match='finite'):
        small.observe(3.0, (math.nan, 0, 0), np.eye(3), det)
