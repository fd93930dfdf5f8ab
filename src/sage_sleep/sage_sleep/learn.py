"""Teach the coherence model from demonstrations and experience.

``collect`` rolls out episodes in the world (the oracle, the current model, or
a DAgger mix of both) through the same SensePipeline the nodes use, labelling
every step with the oracle's action. ``train`` runs HRM-style deep supervision
over time: one segment per control step, the carry detached between steps,
an optimizer step per time step, on batches of episodes. Augmentation
simulates sensor faults (zeroed, noisy or frozen features with or without a
trust drop) and teaches trust. ``bootstrap`` is the first competence: DAgger
from the oracle.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from sage_coherence.model import CoherenceConfig, CoherenceModel, bc_loss
from sage_coherence.runtime import TorchRuntime
from sage_cognition.plan import KnownPlanner
from sage_sim.evaluate import OPENING_TURN, RECALL, forked_imap, language_task, start
from sage_sim.world import ACTION_NAMES, ACTIONS, World, WorldConfig

from sage_sleep.agent import (COGNITION, CoherencePolicy, MODALITIES, PlannerPolicy,
                              SensePipeline, TOKEN_SETS)

FAULTABLE = ('vision', 'audio', 'imu')
# training scenes by episode seed: random layouts, the scenes that need memory, and
# instructions of the language training split followed as plans (seeds below 10_000
# never meet an evaluation suite's)
TRAINING_SCENES = ('random', 'random', 'recall', 'detour', 'language_train')
WINDOW, WARMUP = 16, 4   # supervised steps per training window, unsupervised lead-in
TEACHERS = ('planner', 'operator', 'oracle')


@dataclass
class Episode:
    """One episode's inputs and labels, step-aligned."""

    features: np.ndarray          # [T, F]
    trust: np.ndarray             # [T, M]
    age: np.ndarray               # [T, M]
    teacher: np.ndarray           # [T] discrete ids
    reward: np.ndarray            # [T]
    success: bool = False
    meta: dict = field(default_factory=dict)


def default_config() -> CoherenceConfig:
    """Return the coherence configuration for the built-in world."""
    return CoherenceConfig(modalities=dict(MODALITIES), actions=ACTION_NAMES,
                           action_values=tuple((a[1], a[2]) for a in ACTIONS),
                           token_sets=dict(TOKEN_SETS), match=COGNITION)


def collect(seeds, model: CoherenceModel | None = None, beta: float = 1.0,
            world_config: WorldConfig | None = None, seed: int = 0,
            progress: Callable[[int, int], None] | None = None,
            workers: int = 1, teacher: str = 'planner') -> list[Episode]:
    """Roll out one episode per seed; the teacher drives with probability ``beta``.

    ``teacher`` labels every step: 'planner' (sage_sleep.agent.PlannerPolicy: reads only
    the features the model gets, the places and the instruction), 'operator' (the world's:
    knows what the camera has shown, and cheats a little when a turn did not show the
    target) or 'oracle' (knows the whole map). Episode ``s`` is a
    ``TRAINING_SCENES[s % 5]`` scene; a recall scene opens, as the suite does, with the world
    turning the robot away while it watches (those steps are not labelled).

    Each episode's coin flips are seeded by (``seed``, episode seed), so the
    result is the same for any number of ``workers`` (processes).
    """
    if teacher not in TEACHERS:
        raise ValueError(f'unknown teacher {teacher!r}; choose one of {TEACHERS}')
    seeds = [int(s) for s in seeds]
    cpu_model = copy.deepcopy(model).cpu().eval() if model is not None else None
    job = (cpu_model, beta, world_config or WorldConfig(), seed, teacher)
    return list(forked_imap(_collect_one, seeds, workers, _init_worker, (job,), progress))


_job = None


def _init_worker(job) -> None:
    global _job
    torch.set_num_threads(1)
    model, beta, config, seed, teacher = job
    runtime = TorchRuntime(model, 'training') if model is not None else None
    pipeline = SensePipeline(dict(model.cfg.modalities) if model else MODALITIES, world=config)
    planner = PlannerPolicy(pipeline=pipeline, config=config) if teacher == 'planner' else None
    _job = (runtime, beta, World(config), seed, pipeline, teacher, planner)


def _collect_one(episode_seed: int) -> Episode:
    runtime, beta, world, seed, pipeline, teacher_name, planner = _job
    rng = np.random.default_rng([seed, episode_seed])
    kind = TRAINING_SCENES[episode_seed % len(TRAINING_SCENES)]
    obs = start(world, episode_seed, kind)
    pipeline.reset()
    # the cognition feature: a language episode's plan (what it means: the plans of a
    # perfect planner, step by step), else the instruction itself
    pipeline.plan.planner = KnownPlanner(
        {world.instruction: language_task(world, episode_seed, 'train').plan}) \
        if kind == 'language_train' else None
    if planner is not None:
        planner.reset()
    if runtime is not None:
        runtime.reset()
    rows = {k: [] for k in ('f', 't', 'a', 'y', 'r')}
    opening = int(round(RECALL.opening_s / world.cfg.dt)) if kind == 'recall' else 0
    while not world.done:
        vectors, trust, age = pipeline.observe(obs)
        teacher = planner.label(vectors) if planner else world.teacher_action(teacher_name)
        rows['f'].append(pipeline.stack(vectors))
        rows['t'].append(trust)
        rows['a'].append(age)
        rows['y'].append(teacher if world.steps >= opening else -1)
        if world.steps < opening:
            action = ACTION_NAMES.index(OPENING_TURN[0])
            if runtime is not None:
                runtime.step(vectors, trust, age)        # it watches, as in the suite
        elif runtime is not None and rng.random() >= beta:
            action = runtime.step(vectors, trust, age).action_id
        else:
            action = teacher
        obs, reward, _, _ = world.step(ACTIONS[action][1], ACTIONS[action][2])
        rows['r'].append(reward)
    return Episode(np.stack(rows['f']), np.stack(rows['t']), np.stack(rows['a']),
                   np.array(rows['y']), np.array(rows['r'], np.float32), world.success,
                   {'seed': episode_seed, 'scene': kind,
                    'faults': [f.kind for f in world.cfg.faults]})


def augment_faults(ep: Episode, names: list[str], dims: list[int], rng,
                   p: float = 0.5) -> tuple[Episode, np.ndarray]:
    """Corrupt one modality over a window (with prob. ``p``); return it and trust targets."""
    f, t = ep.features.copy(), ep.trust.copy()
    target = np.full(t.shape, np.nan, np.float32)
    if not ep.meta.get('faults'):
        # a clean episode: every sensor deserved trust, whatever its own estimate said
        # (without this target, trust learning could only ever push trust down)
        for m, n in enumerate(names):
            if n in FAULTABLE:
                target[:, m] = 1.0
    if rng.random() < p:
        choices = [i for i, n in enumerate(names) if n in FAULTABLE]
        m = int(rng.choice(choices))
        T = len(f)
        a = int(rng.integers(0, max(1, T - 5)))
        b = min(T, a + int(rng.integers(5, 60)))
        lo, hi = sum(dims[:m]), sum(dims[:m + 1])
        kind = rng.integers(3)
        if kind == 0:
            f[a:b, lo:hi] = 0.0
        elif kind == 1:
            f[a:b, lo:hi] += rng.normal(0, 1.0, (b - a, hi - lo))
        else:
            f[a:b, lo:hi] = f[a, lo:hi]
        if rng.random() < 0.5:               # a fault the sensor itself noticed
            t[a:b, m] = rng.uniform(0.0, 0.2, b - a)
        target[a:b, m] = 0.0
    return Episode(f, t, ep.age, ep.teacher, ep.reward, ep.success, ep.meta), target


def train(model: CoherenceModel, episodes: list[Episode], epochs: int = 3,
          batch: int = 64, lr: float = 2e-3, augment: bool = True,
          reward_weighted: bool = False, time_budget_s: float = float('inf'),
          seed: int = 0, progress: Callable[[float, dict], None] | None = None,
          should_stop: Callable[[], bool] = lambda: False, updates: int | None = None,
          device: str = 'cpu') -> dict:
    """Deep supervision over random windows of episodes; return the last loss terms.

    Each update runs ``batch`` windows of WINDOW steps from many episodes at
    once (the carry starts fresh and warms up for WARMUP unsupervised steps),
    with the carry detached between HRM segments. Each control step thinks for
    a random 1..max_segments segments on the same input, every one supervised,
    because at run time ACT decides how many segments a cycle gets: the model
    must act well after any number. Random windows decorrelate the updates; an
    epoch sees about every step once. ``updates`` (if given) fixes the number
    of optimizer steps instead of ``epochs``.
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    names, dims = list(model.cfg.modalities), model.dims
    values = torch.tensor([list(v) for v in model.cfg.action_values], dtype=torch.float32,
                          device=device)

    def prepare():
        out = []
        for e in episodes:
            if augment:
                e, target = augment_faults(e, names, dims, rng)
            else:
                target = np.full(e.trust.shape, np.nan, np.float32)
            w = (_return_weights(e.reward) if reward_weighted
                 else np.ones(len(e.reward), np.float32))
            out.append((e, target, w))
        return out
    prepared = prepare()
    steps = sum(len(e.teacher) for e in episodes)
    per_epoch = max(1, -(-steps // (batch * WINDOW)))
    total = updates if updates is not None else epochs * per_epoch
    start, terms = time.monotonic(), {}
    for done in range(1, total + 1):
        if augment and done > 1 and (done - 1) % per_epoch == 0:
            prepared = prepare()                # fresh simulated faults every epoch
        terms = _train_windows(model, opt, prepared, values, batch, rng)
        if progress:
            progress(done / total, terms)
        if should_stop() or time.monotonic() - start > time_budget_s:
            break
    model.cpu().eval()
    return terms


def _train_windows(model, opt, prepared, values, batch, rng) -> dict:
    length = WARMUP + WINDOW
    lens = np.array([len(p[0].teacher) for p in prepared])
    picks = rng.integers(len(prepared), size=batch)
    feats = np.zeros((batch, length, model.feature_size), np.float32)
    m = len(model.dims)
    trust, age = np.zeros((batch, length, m), np.float32), np.zeros((batch, length, m), np.float32)
    trust_t = np.full((batch, length, m), np.nan, np.float32)
    teacher = np.full((batch, length), -1, np.int64)
    weight = np.zeros((batch, length), np.float32)
    for i, k in enumerate(picks):
        e, tt, w = prepared[k]
        t0 = int(rng.integers(-WARMUP, max(1, lens[k] - WINDOW)))
        a, b = max(0, t0), min(lens[k], t0 + length)
        o = a - t0
        feats[i, o:o + b - a], trust[i, o:o + b - a] = e.features[a:b], e.trust[a:b]
        age[i, o:o + b - a], trust_t[i, o:o + b - a] = e.age[a:b], tt[a:b]
        teacher[i, o:o + b - a], weight[i, o:o + b - a] = e.teacher[a:b], w[a:b]
        if t0 > 0:                                   # mid-episode start: warm up unsupervised
            teacher[i, o:o + min(WARMUP, b - a)] = -1
    device = values.device
    feats, trust, age, trust_t, teacher, weight = (
        torch.from_numpy(a).to(device) for a in (feats, trust, age, trust_t, teacher, weight))
    carry = model.initial_carry(batch, device)
    terms_sum, n = {}, 0
    opt.zero_grad(set_to_none=True)
    for t in range(length):
        x, trust_used, mask = model.tokens(feats[:, t], trust[:, t], age[:, t])
        alive = teacher[:, t] >= 0
        ids = teacher[:, t].clamp_min(0)
        segments = int(rng.integers(1, model.cfg.max_segments + 1))
        loss = 0.0
        for _ in range(segments):
            carry, out = model.segment(carry, x, mask)
            if not alive.any():
                continue
            out['trust_used'] = trust_used
            seg_loss, terms = bc_loss(out, ids, values[ids], model.scale,
                                      weight[:, t] * alive.float(), trust_t[:, t])
            loss = loss + seg_loss / segments
        if not alive.any():
            continue
        (loss / length).backward()
        for key, v in terms.items():                  # the last segment's figures
            terms_sum[key] = terms_sum.get(key, 0.0) + v
        n += 1
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return {k: v / max(1, n) for k, v in terms_sum.items()}


def _return_weights(reward: np.ndarray, gamma: float = 0.95) -> np.ndarray:
    """Weights from discounted return-to-go, normalised to mean 1 (reward-weighted BC)."""
    g, out = 0.0, np.zeros_like(reward)
    for i in range(len(reward) - 1, -1, -1):
        g = reward[i] + gamma * g
        out[i] = g
    w = np.exp(np.clip((out - out.mean()) / (out.std() + 1e-6), -2, 2))
    return (w / w.mean()).astype(np.float32)


def bootstrap(cfg: CoherenceConfig | None = None, seeds=range(0, 60), rounds: int = 3,
              updates: int = 300, seed: int = 0, log: Callable[[str], None] = print,
              model: CoherenceModel | None = None, workers: int = 1, device: str = 'cpu',
              batch: int = 64, lr: float = 2e-3, betas: list[float] | None = None,
              teacher: str = 'planner') -> tuple[CoherenceModel, list[Episode]]:
    """First competence: DAgger from a teacher; return the model and all episodes.

    In round r the teacher drives with probability ``betas[r]`` (default 1, 0.5,
    0.25, ...: the teacher first, then more and more the model, so it learns to
    recover from its own mistakes); the teacher labels every step. The seeds are
    split evenly over the rounds; each round trains on all episodes so far.
    """
    torch.manual_seed(seed)
    model = model or CoherenceModel(cfg or default_config())
    betas = list(betas) if betas else [0.5 ** r for r in range(rounds)]
    rounds = len(betas)
    seeds = list(seeds)
    per_round = max(1, len(seeds) // rounds)
    data: list[Episode] = []
    for r, beta in enumerate(betas):
        chunk = seeds[r * per_round:(r + 1) * per_round] or seeds[:per_round]
        t0 = time.monotonic()
        data += collect(chunk, None if beta >= 1 else model, beta=beta, seed=seed + r,
                        workers=workers, teacher=teacher)
        wins = np.mean([e.success for e in data[-len(chunk):]])
        log(f'round {r + 1}/{rounds}: {len(chunk)} episodes (beta {beta:.2f}, '
            f'success {wins:.0%}) in {time.monotonic() - t0:.0f} s; training on {len(data)}')
        t0 = time.monotonic()
        terms = train(model, data, updates=updates, seed=seed + r, device=device, batch=batch,
                      lr=lr)
        log(f'  trained in {time.monotonic() - t0:.0f} s: ' +
            ', '.join(f'{k} {v:.3f}' for k, v in terms.items()))
    return model, data


DRIVERS = ('model', 'teacher')


def record_day(model: CoherenceModel, seeds, store, episode_offset: int = 0,
               world_config: WorldConfig | None = None,
               progress: Callable[[int, int], None] | None = None,
               frame_every: int = 10, teacher: str = 'oracle', driver: str = 'model',
               workers: int = 1) -> dict:
    """Live a day; every step goes to the experience store.

    ``driver`` 'model': the robot's own policy acts (a day of its own
    experience); 'teacher': the teacher drives (a demonstration day, as an
    operator teleoperating the robot gives), while the model runs alongside so
    that salience can be scored. Steps carry the teacher's label, as the world
    publishes it on sage/teacher_action (``teacher``: 'oracle', who knows the
    map, or 'operator', who sees only what the robot's camera has shown), and
    a salience from disagreement with the teacher and reward magnitude (the
    memory node's SNARC score plays this role in the graph). Every
    ``frame_every``-th step of an episode also stores its camera frame (0:
    none), as the memory node does with ``frame_period_s``. Episodes run in
    ``workers`` forked processes; the store gets them in seed order.
    """
    from sage_memory.store import relayout, Step
    if driver not in DRIVERS:
        raise ValueError(f'unknown driver {driver!r}; choose one of {DRIVERS}')
    seeds = [int(s) for s in seeds]
    job = (copy.deepcopy(model).cpu().eval(), world_config or WorldConfig(), teacher, driver,
           frame_every)
    wins = steps = 0
    lived = forked_imap(_live_episode, seeds, workers, _init_day, (job,), progress)
    layout = model.cfg.modalities
    for i, (rows, frames, success) in enumerate(lived):
        episode = episode_offset + i
        for t, features, trust, age, *labels in rows:      # in the store's layout
            features, trust, age = relayout(features, trust, age, layout, store.modalities)
            store.insert(Step(episode, t, features[0], trust[0], age[0], *labels))
        for t, image, salience in frames:
            store.insert_frame(episode, t, image, salience)
        steps += len(rows)
        wins += success
    return {'episodes': len(seeds), 'steps': steps, 'success': wins / max(1, len(seeds))}


_day = None


def _init_day(job) -> None:
    global _day
    torch.set_num_threads(1)
    model, config, teacher, driver, frame_every = job
    _day = (World(config), CoherencePolicy(TorchRuntime(model, 'day')), teacher, driver,
            frame_every)


def _live_episode(seed: int):
    world, policy, teacher, driver, frame_every = _day
    obs = world.reset(seed)
    policy.reset()
    rows, frames = [], []
    while not world.done:
        vectors, trust, age = policy.pipeline.observe(obs)
        d = policy.runtime.step(vectors, trust, age)
        label = world.teacher_action(teacher)
        action, command = ((label, ACTIONS[label][1:]) if driver == 'teacher'
                           else (d.action_id, d.continuous))
        obs, reward, _, _ = world.step(*command)
        salience = 0.6 * float(d.action_id != label) + 0.4 * min(1.0, abs(reward))
        rows.append((world.t, policy.pipeline.stack(vectors), trust, age, action, label,
                     reward, salience))
        if frame_every and (len(rows) - 1) % frame_every == 0:
            frames.append((world.t, obs.image, salience))
    return rows, frames, world.success
