"""Seeded evaluation suites ("morning tests") and baseline policies.

A policy sees only Observations, never the world state, and keeps its own
state across steps: ``policy.reset()`` at an episode start, then
``policy.act(obs) -> (v, w)``. ``evaluate(make_policy, suite)`` runs every
episode of the suite and returns the metrics. The oracle baseline is the one
policy allowed to read the state (through ``bind(world)``): it gives the ceiling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from sage_sim.world import ACTION_NAMES, ACTIONS, Fault, World, WorldConfig


class Policy(Protocol):
    """What evaluate() drives."""

    def reset(self) -> None:
        """Forget the previous episode."""

    def act(self, obs) -> tuple[float, float]:
        """Return (v m/s, w rad/s) for this observation."""


@dataclass(frozen=True)
class Suite:
    """A fixed list of episodes: seeds, the faults applied in each, and the scene kind.

    ``scene``: 'random' (the world's seeded layout), 'language' (that layout with a
    held-out instruction of sage_sim.language, drawn from the seed), 'recall' (the target
    in view at the start, 2.5-4 m ahead; then ``opening_s`` of the world turning the robot
    away, its commands ignored, while the policy watches) or 'detour' (a wall of pillars between
    the start and the target: the straight line fails).
    """

    name: str
    seeds: tuple
    faults: tuple = ()
    time_limit_s: float = 40.0
    scene: str = 'random'
    opening_s: float = 0.0

    def config(self) -> WorldConfig:
        """World configuration of this suite."""
        return WorldConfig(faults=list(self.faults), time_limit_s=self.time_limit_s)


MORNING = Suite('morning', tuple(range(10_000, 10_030)))
FAULTY = Suite('faulty', tuple(range(10_000, 10_030)), faults=(
    Fault('camera_blackout', 4.0, 7.0), Fault('camera_freeze', 12.0, 15.0),
    Fault('camera_blur', 20.0, 26.0), Fault('imu_bias_drift', 0.0),
    Fault('audio_dropout', 0.3, 0.5)))
RECALL = Suite('recall', tuple(range(30_000, 30_030)), scene='recall', opening_s=2.6)
DETOUR = Suite('detour', tuple(range(40_000, 40_030)), scene='detour')
LANGUAGE = Suite('language', tuple(range(50_000, 50_030)), time_limit_s=60.0,
                 scene='language')
TRAINING_SEEDS = range(0, 10_000)   # disjoint from every evaluation suite


SCENES = ('random', 'recall', 'detour', 'language')


def scene(kind: str, seed: int) -> dict:
    """Return ``World.set_scenario`` arguments for a 'recall' or 'detour' episode."""
    if kind not in ('recall', 'detour'):
        raise ValueError(f'unknown scene {kind!r}: use recall or detour')
    rng = np.random.default_rng([seed, 7])
    names = ['red', 'green', 'blue', 'yellow']
    target = names[int(rng.integers(4))]
    while True:                      # the start and the target first, then the rest
        yaw = float(rng.uniform(-np.pi, np.pi))
        heading = np.array([np.cos(yaw), np.sin(yaw)])
        side = np.array([-heading[1], heading[0]])
        pillars = ()
        if kind == 'recall':         # in view ahead
            start = rng.uniform(-2.2, 2.2, 2)
            goal = start + heading * rng.uniform(2.5, 3.5)
        else:                        # a wall across the line, wider than the camera's view
            start = -heading * 1.8 + side * rng.uniform(-0.4, 0.4)
            goal = heading * 1.8 + side * rng.uniform(-0.4, 0.4)
            middle = 0.5 * (start + goal) + side * rng.uniform(-0.3, 0.3)
            pillars = tuple((*(middle + side * k * 0.45), 0.25) for k in range(-3, 4))
        if np.abs(goal).max() <= 2.4 and np.abs(start).max() <= 2.3:
            break
    placed = [goal] + [np.array(p[:2]) for p in pillars]
    beacons = {target: goal}
    line = goal - start
    for name in (n for n in names if n != target):
        while True:                  # apart from all, off the line of sight to the target
            xy = rng.uniform(-2.4, 2.4, 2)
            along = float(np.clip((xy - start) @ line / (line @ line), 0, 1))
            if min(np.hypot(*(xy - o)) for o in placed) > 0.9 and \
                    np.hypot(*(xy - start)) > 1.0 and \
                    np.hypot(*(xy - start - along * line)) > 0.7:
                break
        placed.append(xy)
        beacons[name] = xy
    return {'beacons': {n: (float(x), float(y)) for n, (x, y) in beacons.items()},
            'target': target, 'pillars': pillars,
            'pose': (float(start[0]), float(start[1]), yaw)}


def start(world: World, seed: int, kind: str = 'random'):
    """Begin episode ``seed`` of a scene ``kind``; return obs.

    Kinds: 'random', 'recall', 'detour', 'language' (a held-out instruction) and
    'language_train' (one of the training split, sage_sim.language).
    """
    obs = world.reset(seed)
    if kind in ('language', 'language_train'):
        drawn = language_task(world, seed, 'train' if kind == 'language_train' else 'test')
        return world.set_task(drawn.text, drawn.goals)
    return obs if kind == 'random' else world.set_scenario(**scene(kind, seed))


def language_task(world: World, seed: int, split: str = 'test'):
    """Return the task of language episode ``seed`` (the world reset to it) from ``split``."""
    from sage_sim.language import task
    return task(world, np.random.default_rng([seed, 11]), split)


OPENING_TURN = ACTIONS[ACTION_NAMES.index('turn_left')]   # the world turns the robot away


@dataclass
class Report:
    """Metrics of one evaluation."""

    suite: str
    success_rate: float
    mean_time_s: float          # over successful episodes
    collisions_per_episode: float
    episodes: list = field(default_factory=list)

    def to_json(self) -> str:
        """JSON text of the report."""
        return json.dumps(self.__dict__, indent=1)


def evaluate(make_policy: Callable[[World], Policy], suite: Suite = MORNING,
             progress: Callable[[int, int], None] | None = None, workers: int = 1) -> Report:
    """Run ``suite`` with a policy from ``make_policy(world)``; return its Report.

    With ``workers`` > 1 the episodes run in forked processes, each with its
    own world and policy; a policy that resets itself per episode gives the
    same results either way.
    """
    global _eval_job
    _eval_job = (make_policy, suite)
    episodes = list(forked_imap(_run_episode, suite.seeds, workers, progress=progress))
    wins = [e for e in episodes if e['success']]
    return Report(suite.name, len(wins) / len(episodes),
                  float(np.mean([e['time_s'] for e in wins])) if wins else float('nan'),
                  float(np.mean([e['collisions'] for e in episodes])), episodes)


def forked_imap(fn, items, workers: int = 1, initializer=None, initargs=(),
                progress: Callable[[int, int], None] | None = None):
    """Yield ``fn(x)`` for each of ``items`` in order, in ``workers`` forked processes.

    ``initializer(*initargs)`` runs first in each process (here, with one
    worker); ``progress(done, total)`` is called as each result arrives.
    Forked children inherit everything (policies, models, lambdas: nothing is
    pickled), but objects tied to the parent's threads (rclpy, loaded models)
    must not be finalised in a child: gc.freeze() before the fork keeps the
    child's collector off them, as the gc module's documentation advises.
    """
    items = list(items)

    def reported(results):
        for i, r in enumerate(results):
            if progress:
                progress(i + 1, len(items))
            yield r
    if workers <= 1 or len(items) < 2:
        if initializer is not None:
            initializer(*initargs)
        yield from reported(map(fn, items))
        return
    import gc
    import multiprocessing as mp
    gc.freeze()
    try:
        with mp.get_context('fork').Pool(workers, initializer, initargs) as pool:
            yield from reported(pool.imap(fn, items))
    finally:
        gc.unfreeze()


_eval_job = None
_eval_state = {}


def _run_episode(seed: int) -> dict:
    make_policy, suite = _eval_job
    if _eval_state.get('job') is not _eval_job:     # one world and policy per process
        world = World(suite.config(), seed=suite.seeds[0])
        _eval_state.update(job=_eval_job, world=world, policy=make_policy(world))
    world, policy = _eval_state['world'], _eval_state['policy']
    obs = start(world, seed, suite.scene)
    policy.reset()
    for _ in range(int(round(suite.opening_s / world.cfg.dt))):
        policy.act(obs)                 # it watches; the world turns it away
        obs, _, _, _ = world.step(*OPENING_TURN[1:])
    while not world.done:
        v, w = policy.act(obs)
        obs, _, _, _ = world.step(v, w)
    return world.metrics()


class RandomPolicy:
    """The floor: random discrete actions held for a random 0.3-1.5 s."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.left, self.action = 0, 0

    def reset(self) -> None:
        """Start a new episode."""
        self.left = 0

    def act(self, obs) -> tuple[float, float]:
        """Return the held random action."""
        if self.left <= 0:
            self.action, self.left = int(self.rng.integers(len(ACTIONS))), int(
                self.rng.integers(3, 16))
        self.left -= 1
        return ACTIONS[self.action][1], ACTIONS[self.action][2]


class OraclePolicy:
    """The ceiling: follows the shortest path, reading the world's state."""

    def __init__(self, world: World):
        self.world = world

    def reset(self) -> None:
        """Nothing to forget (the world tracks what has been seen)."""

    def label(self) -> int:
        """Return the teacher's discrete action now."""
        return self.world.oracle_action()

    def act(self, obs) -> tuple[float, float]:
        """Return the teacher's command."""
        a = self.label()
        return ACTIONS[a][1], ACTIONS[a][2]


class OperatorPolicy(OraclePolicy):
    """A teacher as good as a person watching the camera: searches, then the shortest path."""

    def label(self) -> int:
        """Return the operator's discrete action now."""
        return self.world.operator_action()


DETECTION = Suite('detection', tuple(range(20_000, 20_040)))


def evaluate_detector(detect: Callable, suite: Suite = DETECTION, steps: int = 30,
                      min_columns: int = 3, max_bearing_err: float = 0.2) -> dict:
    """Score a detector on the world's renders against the ground truth.

    ``detect(image, fx, fy, cx, cy)`` returns objects with ``class_id``, ``bearing`` and
    ``range``. The robot wanders (seeded random actions). An object counts for recall
    when it fills at least ``min_columns`` image columns; a detection is a true positive
    when an object of its label is seen (in any column) within ``max_bearing_err`` rad.
    Returns precision, recall, mean range and bearing errors and the counts.
    """
    import math
    cfg = suite.config()
    f = cfg.focal_px
    tp = fp = found = visible = 0
    range_err, bearing_err = [], []
    for seed in suite.seeds:
        world = World(cfg, seed=0)
        obs = world.reset(seed)
        rng = np.random.default_rng(seed)
        for _ in range(steps):
            seen = world.visible_objects(min_columns=1)
            used = set()
            for d in detect(obs.image, f, f, cfg.width / 2, cfg.height / 2):
                near = [(abs(t['bearing'] - d.bearing), i) for i, t in enumerate(seen)
                        if t['name'] == d.class_id and i not in used]
                if near and min(near)[0] < max_bearing_err:
                    i = min(near)[1]
                    used.add(i)
                    tp += 1
                    if math.isfinite(d.range):          # NaN: too close to measure
                        range_err.append(abs(seen[i]['range'] - d.range))
                    bearing_err.append(abs(seen[i]['bearing'] - d.bearing))
                else:
                    fp += 1
            big = {i for i, t in enumerate(seen) if t['columns'] >= min_columns}
            visible += len(big)
            found += len(big & used)
            a = int(rng.integers(len(ACTIONS)))
            obs, _, done, _ = world.step(ACTIONS[a][1], ACTIONS[a][2])
            if done:
                break
    return {'precision': tp / max(tp + fp, 1), 'recall': found / max(visible, 1),
            'range_err_m': float(np.mean(range_err)) if range_err else float('nan'),
            'range_err_median_m': float(np.median(range_err)) if range_err else float('nan'),
            'bearing_err_deg': float(np.degrees(np.mean(bearing_err))) if bearing_err
            else float('nan'), 'true_positives': tp, 'false_positives': fp,
            'visible': visible, 'found': found}
