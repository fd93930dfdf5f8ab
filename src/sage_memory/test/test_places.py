"""The places feature: remembered landmarks seen from where the robot is now."""

import math

import numpy as np
import pytest
from sage_cognition.embedding import embed
from sage_memory.places import FIELDS, PlacesConfig, PlacesFeature, tokens
from sage_memory.spatial import SpatialMemory
from sage_sensors.detect import Detector
from sage_sim.evaluate import scene
from sage_sim.world import World

F = 80.0          # the world camera's focal length (160 px, 90 degrees)
N = len(FIELDS)


def watch_then_turn(seed, turn_steps=25):
    """A recall scene: the target ahead, then the robot turns away; places every step."""
    world, detector = World(), Detector()
    obs = world.set_scenario(**scene('recall', seed))
    memory, places = SpatialMemory(), PlacesFeature()
    for step in range(turn_steps + 1):
        o = obs.odom
        pose = (o.x, o.y, o.yaw)
        memory.observe(obs.time_s, pose, o.covariance, detector.detect(obs.image, F, F, 80, 60))
        sensed = places.step(memory, pose, obs.time_s)
        memory.scan(pose, *detector.scan(obs.image, F, F, 80, 60))
        if step < turn_steps:
            obs, _, _, _ = world.step(0.0, 1.2)
    return world, sensed, places


def test_a_target_out_of_view_keeps_its_true_direction_and_label():
    for seed in (1, 2, 3):
        world, sensed, places = watch_then_turn(seed)
        assert not world.target_visible()                 # 3 s of turning at 1.2 rad/s
        tk = tokens(sensed.vector)
        labelled = [t for t in tk if t[0] == 1 and t[8] == 0]
        match = [t for t in labelled
                 if np.allclose(t[N:], places.label_vector(world.target_name))]
        assert len(match) == 1, seed
        t = match[0]
        tx, ty = world.objects[world.target][:2]
        true_bearing = math.atan2(ty - world.y, tx - world.x) - world.yaw
        err = math.remainder(math.atan2(t[2], t[1]) - true_bearing, 2 * math.pi)
        assert abs(err) < 0.2, (seed, err)                # odometry drifted, still ~right
        true_range = math.hypot(tx - world.x, ty - world.y)
        assert abs(t[3] * 8.0 - true_range) < 0.6, seed
        assert t[7] == 0.0 and t[5] > 0                   # not in view, some age
        assert 0.5 < t[4] <= 1.0 and 0.5 < sensed.trust <= 1.0


def test_label_embeddings_match_the_instruction_that_names_them():
    _, sensed, places = watch_then_turn(4)
    instruction = embed('go to the blue beacon')
    sims = {lb: float(places.label_vector(lb) @ instruction)
            for lb in ('red', 'green', 'blue', 'yellow', 'pillar')}
    assert max(sims, key=sims.get) == 'blue'


def test_empty_memory_padding_frontier_and_the_token_limit():
    places = PlacesFeature(PlacesConfig(max_tokens=4, start_place=False))
    empty = places.step(SpatialMemory(), (0.0, 0.0, 0.0), 0.0)
    assert not np.any(empty.vector) and empty.trust == 1.0
    assert empty.vector.shape == (4 * (N + 384),)
    mem = SpatialMemory()
    mem.scan((0.0, 0.0, 0.0), np.linspace(-0.7, 0.7, 50), np.full(50, 3.0))
    frontier = tokens(places.step(mem, (0.0, 0.0, 0.0), 0.0).vector, places.cfg)
    assert frontier[0, 0] == 1 and frontier[0, 8] == 1       # only the frontier
    assert frontier[0, 1] > 0.5                                # ahead, where the scan ended
    from types import SimpleNamespace as Det
    for k in range(6):                                         # six landmarks, 3 slots
        d = Det(class_id='red', score=1.0, bearing=0.0, bearing_variance=1e-4,
                range=1.0 + k, range_variance=1e-3)
        mem.observe(0.0, (0.0, 0.0, 0.0), np.zeros((3, 3)), [d])
    tk = tokens(places.step(mem, (0.0, 0.0, 0.0), 1.0).vector, places.cfg)
    assert tk[:, 0].tolist() == [1, 1, 1, 1] and tk[3, 8] == 1
    assert np.allclose(tk[:3, 3] * 8.0, [1.0, 2.0, 3.0], atol=0.05)   # the nearest first


def test_the_start_is_a_place_that_a_return_instruction_matches():
    from sage_memory.places import START_LABEL
    places = PlacesFeature()
    tk = tokens(places.step(SpatialMemory(), (1.5, -2.0, math.pi / 2), 100.0).vector)
    start = tk[0]
    assert start[0] == 1 and start[8] == 0                      # a place, not the frontier
    assert start[3] * 8.0 == pytest.approx(2.5, abs=1e-5)       # the odom origin, 2.5 m away
    bearing = math.atan2(start[2], start[1])                    # world bearing -> base_link
    assert bearing == pytest.approx(math.atan2(2.0, -1.5) - math.pi / 2, abs=1e-5)
    assert start[5] == 1.0 and start[7] == 0.0                  # long out of view
    assert np.array_equal(start[len(FIELDS):], embed(START_LABEL))
    back, red = embed('go back to where you started'), embed('go to the red beacon')
    labels = ['red', 'green', 'blue', 'yellow', 'pillar']
    assert embed(START_LABEL) @ back > max(embed(lb) @ back for lb in labels) + 0.3
    assert embed(START_LABEL) @ red < embed('red') @ red - 0.15
    assert places.step(SpatialMemory(), (0, 0, 0), 0.0).trust == 1.0   # not a memory
