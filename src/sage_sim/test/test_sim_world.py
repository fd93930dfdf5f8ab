"""The built-in world: determinism, faults, reward and success, baselines."""

import math

import numpy as np
import pytest
from sage_sim.evaluate import (MORNING, OperatorPolicy, OraclePolicy, RandomPolicy, Suite,
                               evaluate)
from sage_sim.world import ACTION_NAMES, ACTIONS, Fault, World, WorldConfig


def run(world, actions):
    out = []
    for a in actions:
        obs, r, done, info = world.step(ACTIONS[a][1], ACTIONS[a][2])
        out.append((obs, r, done))
        if done:
            break
    return out


def test_same_seed_same_episode():
    a, b = World(seed=3), World(seed=3)
    for w in (a, b):
        w.reset(42)
    assert a.instruction == b.instruction and a.target_name == b.target_name
    ra, rb = run(a, [1, 2, 1, 4] * 5), run(b, [1, 2, 1, 4] * 5)
    for (oa, xa, _), (ob, xb, _) in zip(ra, rb):
        assert np.array_equal(oa.image, ob.image) and np.array_equal(oa.audio, ob.audio)
        assert np.array_equal(oa.accel, ob.accel) and xa == xb
    c = World(seed=3)
    c.reset(43)
    assert (c.x, c.y) != (a.x, a.y) or c.target != a.target


def test_instruction_and_cue_only_at_start():
    w = World()
    obs = w.reset(7)
    assert w.target_name in obs.instruction
    steps = run(w, [0] * 10)
    assert all(o.instruction == '' for o, _, _ in steps)
    cue_energy = np.abs(obs.audio.astype(float)).mean()
    late_energy = np.abs(steps[-1][0].audio.astype(float)).mean()
    assert cue_energy > 5 * late_energy


def test_cue_tone_identifies_the_target():
    from sage_sim.world import BEACONS
    for seed in range(6):
        w = World()
        obs = w.reset(seed)
        spectrum = np.abs(np.fft.rfft(obs.audio.astype(float)))
        freqs = np.fft.rfftfreq(len(obs.audio), 1 / w.cfg.audio_rate)
        assert abs(freqs[spectrum.argmax()] - BEACONS[w.target_name][1]) < 20


def test_reaching_the_target_succeeds_and_rewards():
    w = World()
    w.reset(11)
    w.set_scenario({'red': (1.0, 0.0), 'blue': (-2.0, 2.0)}, 'red', (0.0, 0.0, 0.0),
                   pillars=((0.0, -2.0, 0.3),))
    assert 'red' in w.instruction
    _, r1, done1, _ = w.step(0.5, 0.0)
    assert not done1 and r1 > 0  # progress is rewarded
    rewards = [w.step(0.5, 0.0)[1] for _ in range(7)]   # 0.05 m per step
    assert w.done and w.success and rewards[-1] > 1.0 and w.collisions == 0


def test_walls_stop_the_robot_and_count_collisions():
    w = World()
    w.reset(5)
    w.set_scenario({'red': (-2.0, -2.0)}, 'red', (w.cfg.arena_m / 2 - 0.21, 0.0, 0.0))
    for _ in range(3):
        _, r, _, info = w.step(0.5, 0.0)
    assert info['collided'] and w.collisions == 3 and r < 0
    assert w.x < w.cfg.arena_m / 2 - w.cfg.robot_radius


def test_oracle_goes_around_a_pillar():
    w = World()
    w.reset(0)
    w.set_scenario({'green': (2.0, 0.0)}, 'green', (-2.0, 0.0, 0.0), pillars=((0.0, 0.0, 0.5),))
    while not w.done:
        a = w.oracle_action()
        w.step(ACTIONS[a][1], ACTIONS[a][2])
    assert w.success and w.collisions == 0


def test_the_operator_sees_only_what_the_camera_shows_and_searches():
    w = World()
    w.reset(0)
    # the target behind a pillar, then the robot facing away from it
    w.set_scenario({'green': (2.0, 0.0), 'red': (-2.0, 2.0)}, 'green', (-2.0, 0.0, 0.0),
                   pillars=((0.0, 0.0, 0.5),))
    assert not w.target_visible() and not w.target_seen
    w.set_scenario({'green': (2.0, 0.0)}, 'green', (-2.0, 0.0, math.pi / 2))  # it is right
    assert not w.target_seen
    assert w.operator_action() == ACTION_NAMES.index('turn_left')   # searches, unlike
    assert w.oracle_action() != w.operator_action()                 # the all-knowing oracle
    assert w.teacher_action('operator') == w.operator_action()
    assert w.teacher_action('oracle') == w.oracle_action()
    with pytest.raises(ValueError, match='unknown teacher'):
        w.teacher_action('opertor')
    while not w.target_seen:
        a = w.operator_action()
        assert a == ACTION_NAMES.index('turn_left')
        w.step(ACTIONS[a][1], ACTIONS[a][2])
    assert w.target_visible()
    while not w.done:
        a = w.operator_action()
        w.step(ACTIONS[a][1], ACTIONS[a][2])
    assert w.success and w.collisions == 0


def test_the_operator_is_as_good_as_the_oracle_on_the_morning_suite():
    assert evaluate(OperatorPolicy, MORNING).success_rate == 1.0


def test_time_limit_ends_episode():
    w = World(WorldConfig(time_limit_s=1.0))
    w.reset(1)
    steps = run(w, [0] * 20)
    assert len(steps) == 10 and steps[-1][2] and not w.success


def test_faults_apply_on_schedule():
    faults = [Fault('camera_blackout', 0.5, 1.0), Fault('camera_freeze', 1.5, 2.0),
              Fault('audio_dropout', 0.0, 0.3), Fault('imu_saturation', 0.0, math.inf)]
    w = World(WorldConfig(faults=faults))
    w.reset(2)
    steps = run(w, [4] * 25)   # turning, so the view changes
    by_t = {round(o.time_s, 1): o for o, _, _ in steps}
    assert by_t[0.7].image.max() == 0 and by_t[0.4].image.max() > 0
    assert np.array_equal(by_t[1.6].image, by_t[1.7].image)
    assert not np.array_equal(by_t[1.2].image, by_t[1.3].image)
    assert not by_t[0.1].audio.any() and by_t[0.4].audio.any()
    assert all(abs(o.gyro[2]) <= w.cfg.imu_saturation_gyro for o, _, _ in steps)
    assert 'camera_blackout' in by_t[0.7].faults


def test_blur_lowers_image_sharpness():
    clear = World()
    blurred = World(WorldConfig(faults=[Fault('camera_blur', 0, math.inf)]))
    a, b = clear.reset(9).image.mean(2), blurred.reset(9).image.mean(2)

    def laplacian_var(x):
        return (4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2]
                - x[1:-1, 2:]).var()
    assert laplacian_var(b) < 0.1 * laplacian_var(a)


def test_oracle_is_the_ceiling_and_random_the_floor():
    suite = Suite('test', MORNING.seeds[:10])
    oracle = evaluate(OraclePolicy, suite)
    rand = evaluate(lambda world: RandomPolicy(0), suite)
    assert oracle.success_rate >= 0.9
    assert rand.success_rate <= 0.3
    assert len(oracle.episodes) == 10
    calls = []
    parallel = evaluate(OraclePolicy, suite, workers=2, progress=lambda *c: calls.append(c))
    assert parallel.episodes == oracle.episodes
    assert calls == [(i, 10) for i in range(1, 11)]       # one report per episode, in order


@pytest.mark.parametrize('action', ACTION_NAMES)
def test_every_action_is_valid(action):
    w = World()
    w.reset(0)
    a = ACTION_NAMES.index(action)
    obs, *_ = w.step(ACTIONS[a][1], ACTIONS[a][2])
    assert obs.image.shape == (120, 160, 3) and obs.image.dtype == np.uint8
    assert obs.audio.dtype == np.int16 and len(obs.audio) == 1600


def odom_in_world(world, odom):
    x0, y0, yaw0 = world.odom_to_world()
    return (x0 + math.cos(yaw0) * odom.x - math.sin(yaw0) * odom.y,
            y0 + math.sin(yaw0) * odom.x + math.cos(yaw0) * odom.y)


def test_odometry_is_exact_without_noise_and_never_changes_what_sensors_see():
    exact = World(WorldConfig(odom_scale_bias=0, odom_slip=0, odom_yaw_noise=0), seed=3)
    noisy = World(seed=3)
    for w in (exact, noisy):
        w.reset(7)
    for a in [1, 2, 1, 4, 1] * 6:
        oe, _, _, info = exact.step(ACTIONS[a][1], ACTIONS[a][2])
        on, *_ = noisy.step(ACTIONS[a][1], ACTIONS[a][2])
        assert np.array_equal(oe.image, on.image) and np.array_equal(oe.gyro, on.gyro)
        if exact.collisions:
            break                             # blocked wheels turn: odometry counts them
        assert odom_in_world(exact, oe.odom) == pytest.approx((exact.x, exact.y), abs=1e-9)
        yaw = exact.odom_to_world()[2] + oe.odom.yaw
        assert math.cos(yaw - exact.yaw) == pytest.approx(1.0)
    assert exact.steps > 10 and noisy.odom.x != exact.odom.x      # the noise is there


def test_odometry_drifts_as_its_covariance_says_and_blocked_wheels_slip():
    """Over many seeded drives, the position error matches the covariance (NEES ~ 2)."""
    nees, far_err, near_err = [], [], []
    for seed in range(40):
        world = World(seed=0)
        world.reset(seed)
        travelled, last = 0.0, None
        for step in range(120):
            a = [1, 1, 2, 1, 3, 1, 4][step % 7] if step % 20 else 5
            x, y = world.x, world.y
            obs, _, done, info = world.step(ACTIONS[a][1], ACTIONS[a][2])
            if info['collided'] or done:
                break                             # (a collision's slip is not modelled)
            travelled += math.hypot(world.x - x, world.y - y)
            last = obs.odom, world.x, world.y
        if last is None:
            continue
        odom, x, y = last
        ex, ey = np.subtract(odom_in_world(world, odom), (x, y))
        rot = world.odom_to_world()[2]    # the covariance is in odom: rotate the error there
        e = np.array([math.cos(rot) * ex + math.sin(rot) * ey,
                      -math.sin(rot) * ex + math.cos(rot) * ey])
        if travelled > 0.5:
            nees.append(float(e @ np.linalg.solve(odom.covariance[:2, :2], e)))
            (far_err if travelled > 2.0 else near_err).append(float(np.hypot(*e)))
    assert len(nees) > 20
    print(f'odometry NEES {np.mean(nees):.2f} over {len(nees)} drives; error '
          f'{np.mean(near_err):.3f} m after 0.5-2 m, {np.mean(far_err):.3f} m after more')
    assert 0.8 < np.mean(nees) < 4.0, np.mean(nees)            # 2 for an honest covariance
    assert np.mean(far_err) > np.mean(near_err) > 0            # error grows with distance
    # pushing into a wall: the robot stays, the wheels turn, the odometry counts them
    world = World(seed=0)
    world.set_scenario({'red': (2.0, 2.0)}, 'red', (2.7, 0.0, 0.0))
    run(world, [1] * 10)
    assert world.collisions >= 5 and world.odom.x > 0.3


def test_recall_and_detour_scenes_need_memory_and_a_way_round():
    from sage_sim.evaluate import DETOUR, RECALL, scene
    for seed in RECALL.seeds[:10]:
        world = World(seed=0)
        world.reset(seed)
        world.set_scenario(**scene('recall', seed))
        assert world.target_visible(), seed                    # seen at the start ...
        run(world, [ACTION_NAMES.index('turn_left')] * 26)
        assert not world.target_visible(), seed                # ... then out of view
    for seed in DETOUR.seeds[:10]:
        world = World(seed=0)
        world.reset(seed)
        world.set_scenario(**scene('detour', seed))
        tx, ty = world._obj_xy[world.target]
        line = [(world.x + f * (tx - world.x), world.y + f * (ty - world.y))
                for f in np.linspace(0.1, 0.9, 50)]
        assert any(world._collides(x, y) for x, y in line), seed   # the straight line fails
    with pytest.raises(ValueError, match='unknown scene'):
        scene('maze', 0)


@pytest.mark.parametrize('suite', ['recall', 'detour'])
def test_the_teachers_solve_the_memory_suites_and_random_does_not(suite):
    from sage_sim.evaluate import DETOUR, RECALL
    s = {'recall': RECALL, 'detour': DETOUR}[suite]
    short = Suite(s.name, s.seeds[:12], scene=s.scene, opening_s=s.opening_s)
    assert evaluate(OraclePolicy, short).success_rate >= 0.9
    assert evaluate(OperatorPolicy, short).success_rate >= 0.75
    assert evaluate(lambda w: RandomPolicy(0), short).success_rate <= 0.35
