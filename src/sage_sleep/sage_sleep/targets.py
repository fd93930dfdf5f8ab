"""What sleep improves: the coherence model, the camera's frame encoder, a LoRA adapter.

``CoherenceTarget`` selects the day's episodes by salience, trains the model
from its current version with a small learning rate and a time bound
(behaviour cloning on the teacher's labels: the day's own states labelled by
the teacher make a DAgger round; sensor-fault augmentation teaches trust), and
scores a candidate by closed-loop success on a validation suite of the world
(ties, common on a few episodes, go to the better teacher agreement on held-out
stored episodes), with the morning suite as the regression set.

``EncoderTarget`` trains the camera node's frame autoencoder on the camera
frames the memory node stored with salient steps, and scores a candidate by
its reconstruction error on held-out stored frames, with frames of the
built-in world's morning suite as the regression set.

``LoraTarget`` trains a LoRA adapter of the embedded language model
(SmolLM2-135M, peft) on the trusted exchanges that cognition nodes record in
``exchanges.jsonl`` (sage_cognition.exchanges), from the adapter in use,
and scores a candidate by minus its loss on the answers of held-out
exchanges. The regression value guards against LoRA collapse: perplexity on
general text may rise by at most 10 % over the base model's, the repetition
rate of greedy generations by at most 0.1; a candidate outside either bound
gets a lower regression value than the version in use and is rolled back
(``last_guard`` and the metrics say which bound it broke).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile

import numpy as np
import torch
from sage_common.checkpoints import CheckpointStore
from sage_coherence.model import CoherenceConfig, CoherenceModel
from sage_coherence.runtime import TorchRuntime
from sage_common.paths import resolve_path
from sage_memory.store import ExperienceStore, relayout
from sage_sim.evaluate import MORNING, Suite, evaluate

from sage_sleep.agent import CoherencePolicy
from sage_sleep.consolidate import Evaluation
from sage_sleep.learn import collect, Episode, train

TIE_BREAK = 1e-3
VALIDATION = Suite('validation', tuple(range(20_000, 20_100)))
# The morning suite is the regression set; training seeds are below 10 000 (disjoint).


def episodes_from_store(store: ExperienceStore, ids, layout: dict | None = None) -> list[Episode]:
    """Turn stored episodes into training episodes (teacher-labelled steps only).

    They come in the model's modality ``layout`` (default: the store's; see
    sage_memory.store.relayout).
    """
    out = []
    for eid in ids:
        steps = [s for s in store.episode(eid) if s.teacher >= 0]
        if len(steps) < 2:
            continue
        features, trust, age = relayout(np.stack([s.features for s in steps]),
                                        np.stack([s.trust for s in steps]),
                                        np.stack([s.age for s in steps]), store.modalities,
                                        layout or store.modalities)
        out.append(Episode(features, trust, age, np.array([s.teacher for s in steps]),
                           np.array([s.reward for s in steps], np.float32),
                           meta={'episode': int(eid)}))
    return out


def store_episodes(store: ExperienceStore, episodes: list[Episode], layout: dict,
                   episode_offset: int, salience: float = 0.5) -> None:
    """Write training episodes (in ``layout``) into the store (in its own layout)."""
    from sage_memory.store import Step
    for k, ep in enumerate(episodes):
        features, trust, age = relayout(ep.features, ep.trust, ep.age, layout,
                                        store.modalities)
        for t in range(len(features)):
            store.insert(Step(episode_offset + k, 0.1 * t, features[t], trust[t], age[t],
                              int(ep.teacher[t]), int(ep.teacher[t]), float(ep.reward[t]),
                              salience))


def demonstration_day(cfg: CoherenceConfig, seeds, store: ExperienceStore,
                      teacher: str = 'oracle', updates: int = 300, seed: int = 0,
                      workers: int = 1, device: str = 'cpu', episode_offset: int = 100_000,
                      time_budget_s: float = float('inf')) -> tuple[CoherenceModel, dict]:
    """Live a robot's first day; return the model it gave and the day's summary.

    The teacher drives ``seeds`` and a new model learns them by behaviour cloning (on
    every input, places too); the day also goes to ``store`` (in its layout) for the
    nights to rehearse.
    """
    torch.manual_seed(seed)
    demos = collect(seeds, None, beta=1.0, seed=seed, workers=workers, teacher=teacher)
    store_episodes(store, demos, cfg.modalities, episode_offset)
    model = CoherenceModel(cfg)
    train(model, demos, updates=updates, batch=128, lr=2e-3, seed=seed, device=device,
          time_budget_s=time_budget_s)
    return model, {'episodes': len(demos), 'steps': int(sum(len(d.teacher) for d in demos)),
                   'success': float(np.mean([d.success for d in demos])),
                   'demonstrations': len(demos)}


class CoherenceTarget:
    """Sleep target for the coherence model (see the module doc)."""

    name = 'coherence'

    def __init__(self, store: ExperienceStore, config: CoherenceConfig, lr: float = 1e-3,
                 epochs: int = 20, min_gain: float = 0.0,
                 validation: Suite = Suite('validation', VALIDATION.seeds[:20]),
                 regression: Suite = MORNING, seed: int = 0, min_episodes: int = 4,
                 workers: int = 1, device: str = 'cpu'):
        self.store, self.config = store, config
        self.workers = workers      # evaluation processes (forked; 1 inside a ROS node)
        self.device = device        # where training runs ('cuda' on a GPU host)
        self.lr, self.epochs, self.min_gain = lr, epochs, min_gain
        self.validation, self.regression = validation, regression
        self.rng = np.random.default_rng(seed)
        self.seed, self.min_episodes = seed, min_episodes

    def _model(self, state: dict) -> CoherenceModel:
        model = CoherenceModel(self.config)
        model.load_state_dict(state)
        return model.eval()

    def select(self, budget: dict):
        """Pick salience-weighted episodes up to max_experiences steps.

        One in five, and those the store marks held out (measurements), go to the
        held-out set.
        """
        listed = self.store.episodes()      # one snapshot: the memory node keeps writing
        eps = {e[0]: e[1] for e in listed}
        chosen, steps = [], 0
        for eid in self.store.sample_episodes(len(eps), self.rng, listed):
            if steps >= budget.get('max_experiences', 10_000):
                break
            chosen.append(eid)
            steps += eps[eid]
        data = episodes_from_store(self.store, chosen, self.config.modalities)
        if len(data) < self.min_episodes:
            return None
        measured = self.store.held_out()    # e.g. the morning suite: scored, never learned
        held = [e for e in data if e.meta['episode'] % 5 == 0
                or e.meta['episode'] in measured] or data[:1]
        held_ids = {e.meta['episode'] for e in held}
        rest = [e for e in data if e.meta['episode'] not in held_ids]
        return {'train': rest or data, 'held_out': held}

    def augment(self, data):
        """Fault augmentation is applied per batch inside train (fresh each epoch)."""
        return data

    def train(self, state: dict, data, budget_s: float, progress) -> dict:
        """Fine-tune a copy of ``state``; return the candidate's state."""
        model = self._model(copy.deepcopy(state))
        train(model, data['train'], epochs=self.epochs, lr=self.lr,
              time_budget_s=budget_s, seed=self.seed, progress=lambda f, _: progress(f),
              device=self.device)
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def evaluate(self, state: dict, data) -> Evaluation:
        """Closed-loop validation success, regression success, held-out accuracy."""
        model = self._model(state)

        def policy(world):
            return CoherencePolicy(TorchRuntime(model, 'candidate'))
        val = evaluate(policy, self.validation, workers=self.workers)
        reg = evaluate(policy, self.regression, workers=self.workers)
        acc = heldout_accuracy(model, data['held_out'])
        # closed-loop success decides; a tie goes to the better teacher agreement on held-out
        # stored steps (worth less than one validation episode in a thousand)
        return Evaluation(score=val.success_rate + TIE_BREAK * acc,
                          regression=reg.success_rate,
                          metrics={'validation_success': val.success_rate,
                                   'success': reg.success_rate, 'heldout_accuracy': acc})


@torch.inference_mode()
def heldout_accuracy(model: CoherenceModel, episodes: list[Episode]) -> float:
    """Teacher agreement of the model on stored episodes it did not train on."""
    hits = total = 0
    for ep in episodes:
        carry = model.initial_carry(1)
        for t in range(len(ep.teacher)):
            carry, out = model(carry, torch.from_numpy(ep.features[t:t + 1]),
                               torch.from_numpy(ep.trust[t:t + 1]),
                               torch.from_numpy(ep.age[t:t + 1]))
            hits += int(out['action_logits'].argmax(-1)[0] == int(ep.teacher[t]))
            total += 1
    return hits / max(1, total)


def regression_frames(seeds=MORNING.seeds[:10], views: int = 10) -> list[np.ndarray]:
    """Camera frames of the world at fixed seeds and headings (the encoder's regression set)."""
    from sage_sim.world import World
    world, frames = World(), []
    for s in seeds:
        world.reset(int(s))
        for _ in range(views):
            frames.append(world.render())
            for _ in range(5):                   # turn 0.6 rad in place between views
                world.step(0.0, 1.2)
    return frames


class EncoderTarget:
    """Sleep target for the camera's frame autoencoder (see the module doc)."""

    name = 'vision_encoder'

    def __init__(self, store: ExperienceStore, lr: float = 5e-4, epochs: int = 30,
                 min_gain: float = 0.0, max_frames: int = 4000, min_frames: int = 32,
                 seed: int = 0, regression: list | None = None):
        self.store, self.lr, self.epochs, self.min_gain = store, lr, epochs, min_gain
        self.max_frames, self.min_frames, self.seed = max_frames, min_frames, seed
        self.rng = np.random.default_rng(seed)
        self.regression = regression if regression is not None else regression_frames()

    def select(self, budget: dict):
        """Salience-weighted stored frames; those of every fifth episode are held out."""
        n = min(self.max_frames, int(budget.get('max_experiences', self.max_frames)))
        frames = self.store.sample_frames(n, self.rng)
        if len(frames) < self.min_frames:
            return None
        held = [f for e, f in frames if e % 5 == 0]
        train = [f for e, f in frames if e % 5 != 0]
        if len(held) < 4 or len(train) < 4:          # few episodes: every fifth frame
            held = [f for _, f in frames[::5]]
            train = [f for i, (_, f) in enumerate(frames) if i % 5]
        return {'train': train, 'held_out': held}

    def augment(self, data):
        """Mirroring is applied per batch inside FrameEncoder.fit."""
        return data

    def train(self, state: dict, data, budget_s: float, progress) -> dict:
        """Fine-tune a copy of the encoder on the day's frames within ``budget_s``."""
        from sage_sensors.encoder import FrameEncoder
        enc = FrameEncoder.from_blob(copy.deepcopy(state), 'current encoder')
        enc.fit(data['train'], epochs=self.epochs, lr=self.lr, val_fraction=0.1,
                time_limit_s=budget_s, seed=self.seed)
        progress(1.0)
        return enc.to_blob()

    def evaluate(self, state: dict, data) -> Evaluation:
        """Median reconstruction error on held-out frames (score = minus it) and regression."""
        from sage_sensors.encoder import FrameEncoder
        enc = FrameEncoder.from_blob(state, 'encoder')
        held = float(np.median(enc.encode_batch(data['held_out'])[1]))
        reg = float(np.median(enc.encode_batch(self.regression)[1]))
        return Evaluation(score=-held, regression=-reg,
                          metrics={'heldout_error': held, 'regression_error': reg})


def encoder_base(ckpts: CheckpointStore, latent: int = 32) -> None:
    """Commit an untrained encoder as version 1 when there is none (SAGE ships no encoder)."""
    from sage_sensors.encoder import FrameEncoder
    if ckpts.latest_version() is None:
        ckpts.commit(FrameEncoder(latent=latent).to_blob(), {
            'config': {'latent': latent}, 'note': 'untrained initialisation: the base that '
            'the first night\'s training must beat'})


GENERAL_PROMPTS = ([{'role': 'user', 'content': 'Describe what a mobile robot does.'}],)


class LoraTarget:
    """Sleep target for the LoRA adapter of the embedded language model (see the module doc).

    The LocalBackend is built on first use (configure stays fast); pass one to
    share a loaded model. Its adapter is changed while the target evaluates,
    so it must not be the backend a cognition node thinks with.
    """

    name = 'lora'

    def __init__(self, exchanges_path: str, backend=None, lr: float = 5e-4,
                 max_steps: int = 100, rank: int = 8, min_gain: float = 0.01,
                 min_trust: float = 0.5, max_exchanges: int = 400, min_exchanges: int = 8,
                 seed: int = 0, threads: int = 0, perplexity_tolerance: float = 0.10,
                 repetition_tolerance: float = 0.1, repetition_prompts: int = 3,
                 max_tokens: int = 32):
        self.path, self._llm, self.threads = exchanges_path, backend, threads
        self.lr, self.max_steps, self.rank, self.seed = lr, max_steps, rank, seed
        self.min_gain, self.min_trust = min_gain, min_trust
        self.max_exchanges, self.min_exchanges = max_exchanges, min_exchanges
        self.perplexity_tolerance = perplexity_tolerance
        self.repetition_tolerance = repetition_tolerance
        self.repetition_prompts, self.max_tokens = repetition_prompts, max_tokens
        self._base: dict[str, tuple[float, float]] = {}   # prompts -> base (ppl, repetition)
        self.last_guard = ''          # why the last evaluated state broke a guard ('' = none)
        self.last_train: dict = {}
        self.skipped_lines = 0

    def backend(self):
        """Return the language model this target trains (loaded on first use)."""
        if self._llm is None:
            from sage_cognition.backends import LocalBackend
            self._llm = LocalBackend(threads=self.threads)
        return self._llm

    def select(self, budget: dict):
        """Trusted exchanges, highest trust (then most recent) first; every fifth held out."""
        from sage_cognition.exchanges import read_exchanges
        records, self.skipped_lines = read_exchanges(self.path)
        seen, good = set(), []
        for r in sorted(records, key=lambda r: -_num(r.get('t'))):       # newest first
            messages = _messages(r.get('messages'))
            answer = r['answer'].strip()
            if messages is None or not answer or _num(r.get('trust')) < self.min_trust:
                continue
            key = json.dumps([messages, answer], sort_keys=True)
            if key not in seen:                  # periodic thoughts repeat: keep the newest
                seen.add(key)
                good.append((round(_num(r.get('trust')), 1), messages, answer))
        good.sort(key=lambda g: -g[0])           # stable: newest first within a trust step
        cap = min(self.max_exchanges, int(budget.get('max_experiences', self.max_exchanges)))
        pairs = [(m, a) for _, m, a in good[:cap]]
        if len(pairs) < self.min_exchanges:
            return None
        held = pairs[::5]
        train = [p for i, p in enumerate(pairs) if i % 5]
        prompts = [m for m, _ in held[:self.repetition_prompts]] + list(GENERAL_PROMPTS)
        return {'train': train, 'held_out': held, 'prompts': prompts}

    def augment(self, data):
        """No augmentation: the exchanges are the model's own trusted answers."""
        return data

    def train(self, state: dict, data, budget_s: float, progress) -> dict:
        """Train from the adapter in ``state`` (or a new one on the base) within ``budget_s``."""
        from sage_cognition.lora import adapter_state, train_adapter, write_adapter
        with tempfile.TemporaryDirectory(prefix='sage-lora-') as tmp:
            init = write_adapter(state, os.path.join(tmp, 'init'))
            out = os.path.join(tmp, 'candidate')
            self.last_train = train_adapter(
                self.backend(), data['train'], out, time_budget_s=budget_s,
                max_steps=self.max_steps, lr=self.lr, rank=self.rank, seed=self.seed,
                progress=lambda f, _loss: progress(f), init=init)
            return adapter_state(out)

    def _measure(self, state: dict, data) -> tuple[float, float, float]:
        """(held-out answer loss, general-text perplexity, repetition) of ``state``."""
        from sage_cognition.lora import (answer_loss, generation_repetition,
                                         perplexity, write_adapter)
        llm = self.backend()
        with tempfile.TemporaryDirectory(prefix='sage-lora-eval-') as tmp:
            try:
                llm.load_adapter(write_adapter(state, os.path.join(tmp, 'adapter')))
                return (answer_loss(llm, data['held_out']), perplexity(llm),
                        generation_repetition(llm, data['prompts'], self.max_tokens))
            finally:
                llm.load_adapter('')

    def evaluate(self, state: dict, data) -> Evaluation:
        """Score = minus the held-out answer loss; regression = minus the guard violation."""
        from sage_cognition.lora import base_state
        loss, ppl, rep = self._measure(state, data)
        key = json.dumps(data['prompts'], sort_keys=True)
        if state.get('adapter_config') is None:
            self._base[key] = (ppl, rep)
        if key not in self._base:
            self._base[key] = self._measure(base_state(), data)[1:]
        base_ppl, base_rep = self._base[key]
        ppl_limit = base_ppl * (1 + self.perplexity_tolerance)
        rep_limit = base_rep + self.repetition_tolerance
        broken = []
        if ppl > ppl_limit:
            broken.append(f'perplexity on general text {ppl:.2f} > {ppl_limit:.2f} '
                          f'(base {base_ppl:.2f} + {self.perplexity_tolerance:.0%})')
        if rep > rep_limit:
            broken.append(f'repetition rate {rep:.3f} > {rep_limit:.3f} '
                          f'(base {base_rep:.3f} + {self.repetition_tolerance})')
        self.last_guard = '; '.join(broken)
        violation = max(0.0, ppl / ppl_limit - 1) + max(0.0, rep - rep_limit)
        return Evaluation(score=-loss, regression=-violation, note=self.last_guard, metrics={
            'heldout_loss': loss, 'perplexity': ppl, 'repetition': rep,
            'perplexity_limit': ppl_limit, 'repetition_limit': rep_limit,
            'guard_ok': float(not broken), 'train_exchanges': float(len(data['train'])),
            'heldout_exchanges': float(len(data['held_out']))})


def _num(value, default: float = 0.0) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if out == out else default          # NaN counts as missing


def _messages(value):
    """Return chat messages as plain {'role', 'content'} dicts, or None if malformed."""
    if not isinstance(value, list) or not value:
        return None
    out = []
    for m in value:
        if not isinstance(m, dict) or m.get('role') not in ('system', 'user', 'assistant') \
                or not isinstance(m.get('content'), str):
            return None
        out.append({'role': m['role'], 'content': m['content']})
    return out


def lora_base(ckpts: CheckpointStore) -> None:
    """Commit "no adapter" (the base model) as version 1 when there is none."""
    from sage_cognition.lora import base_state
    if ckpts.latest_version() is None:
        ckpts.commit(base_state(), {
            'config': {'model': 'SmolLM2-135M-Instruct'}, 'note': 'no adapter: the base '
            'model that the first night\'s adapter must beat'})


# Every model sleep can improve, by name (the sleep node's ``targets`` parameter).
TARGETS = (CoherenceTarget.name, EncoderTarget.name, LoraTarget.name)


def store_missing(params: dict) -> bool:
    """Return True if a target needs the experience store and it does not exist yet."""
    return bool(set(params['targets']) & {'coherence', 'vision_encoder'}) and \
        not os.path.exists(resolve_path(params['store_path']))


def check_models(params: dict) -> None:
    """Raise CheckpointError (saying how to get one) if the coherence model is missing."""
    if 'coherence' in params['targets']:
        CheckpointStore(resolve_path(params['model_dir']), 'coherence').open()


def build_targets(params: dict):
    """Build the sleep node's targets and checkpoint stores from its parameters."""
    model_dir = resolve_path(params['model_dir'])
    targets, stores = {}, {}
    store_path = resolve_path(params['store_path'])
    if store_missing(params):
        raise ValueError(f'no experience store at {store_path}: run SAGE with the memory '
                         f'node first')
    for name in params['targets']:
        if name == 'vision_encoder':
            ckpts = CheckpointStore(model_dir, name, keep=params['keep_versions'])
            encoder_base(ckpts)
            targets[name] = EncoderTarget(ExperienceStore(store_path), seed=params['seed'])
            stores[name] = ckpts
            continue
        if name == 'lora':
            ckpts = CheckpointStore(model_dir, name, keep=params['keep_versions'])
            lora_base(ckpts)
            path = resolve_path(params['exchanges_path'])
            targets[name] = LoraTarget(path, seed=params['seed'])
            stores[name] = ckpts
            continue
        if name != 'coherence':
            raise ValueError(f'unknown sleep target {name!r}; choose from {TARGETS}')
        ckpts = CheckpointStore(model_dir, 'coherence', keep=params['keep_versions'])
        current = ckpts.open()     # no base model: CheckpointError tells how to train one
        config = CoherenceConfig.from_dict(current.meta['config'])
        store = ExperienceStore(store_path)
        if any(config.modalities.get(m) != n for m, n in store.modalities.items()):
            raise ValueError(f'the store\'s modalities {store.modalities} are not among the '
                             f'model\'s {config.modalities}')
        validation = Suite('validation', VALIDATION.seeds[:params['validation_episodes']])
        regression = Suite(MORNING.name, MORNING.seeds[:params['regression_episodes']])
        targets[name] = CoherenceTarget(store, config, seed=params['seed'],
                                        validation=validation, regression=regression)
        stores[name] = ckpts
    return targets, stores
