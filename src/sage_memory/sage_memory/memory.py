"""The memory step: one call scores, remembers and stores a moment of the robot's life.

ROS-free; the memory node only turns messages into calls of ``Memory`` and its results
back into messages. Inputs arrive whenever they come (``put_feature``, ``set_action``,
``set_teacher``, ``add_reward``, ``set_episode``, ``offer_frame``); ``step(now_s, wall_s)``
then takes the newest feature of every modality, recalls from the sidecar, scores the step
(SNARC), writes the sidecar gated by salience, stores the step (with the action taken, the
teacher's action and the reward, and now and then the camera frame) for the sleep node,
and returns what the node publishes.
"""

from __future__ import annotations

import math
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from sage_common import snapshot
from sage_common.features import FeatureBuffer

from sage_memory.sidecar import Sidecar, SidecarError
from sage_memory.snarc import Scores, Snarc
from sage_memory.store import ExperienceStore, LayoutMismatch, set_aside, Step, StoreError

# Rewards are small per step; a larger one is a broken publisher, not an event.
MAX_ABS_REWARD = 1e3


def shared_spans(modalities: dict) -> list[tuple[int, int]]:
    """Return the spans of a step's features that repeat across steps (kept once).

    Each places token's label embedding, and a cognition feature whole (a plan step or an
    instruction's embedding holds for many steps).
    """
    from sage_common.places_layout import EMBED_DIM, FIELDS, TOKEN_DIM
    spans, start = [], 0
    for name, size in modalities.items():
        if name == 'places' and size % TOKEN_DIM == 0:
            spans += [(start + k * TOKEN_DIM + len(FIELDS), EMBED_DIM)
                      for k in range(size // TOKEN_DIM)]
        elif name.startswith('cognition'):
            spans.append((start, size))
        start += size
    return spans


@dataclass
class MemoryConfig:
    """The memory node's parameters of the same names (defaults as in config/sage.yaml)."""

    modalities: dict = field(default_factory=dict)      # name -> feature length
    store_path: str = ''
    sidecar_path: str = ''
    store_threshold: float = 0.0
    max_rows: int = 200_000
    max_frames: int = 5000
    weights: tuple = (0.25, 0.2, 0.15, 0.25, 0.15)
    learn_weights: float = 0.0
    key_dim: int = 256
    slots: int = 64
    forget: float = 1e-4
    label_timeout_s: float = 1.0
    frame_period_s: float = 1.0


@dataclass
class Recollection:
    """What one step gives: salience, whether it was stored, the sidecar's readout."""

    scores: Scores
    stored: bool
    recalled: np.ndarray
    confidence: float
    trust: np.ndarray


class Memory:
    """SNARC salience, the sidecar fast-weight memory and the experience store, as one step.

    Storage faults (a full disk, a read-only home) never raise from ``step``: they are
    counted in ``store_errors``/``store_error`` and the step goes on unstored.
    """

    def __init__(self, config: MemoryConfig, log: Callable[[str], None] = print):
        self.config = c = config
        if not c.modalities:
            raise ValueError('memory needs at least one modality')
        self.log = log
        dims = list(c.modalities.values())
        self.snarc = Snarc(dims, c.weights, weight_lr=c.learn_weights)
        try:
            self.store = self._open_store()
        except LayoutMismatch as exc:       # e.g. a SAGE before places were stored: keep it
            kept = set_aside(c.store_path)
            log(f'{exc}: kept it as {kept}; storing anew')
            self.store = self._open_store()
        self.sidecar_note = ''
        self.sidecar = self._load_sidecar(sum(dims))
        self.buffer = FeatureBuffer(dict(c.modalities), 0.5, 2.0)
        for m in c.modalities:
            if m.startswith('cognition'):
                self.buffer.set_lifetime(m, 30.0, 120.0)     # a plan stays valid
        self.action = self.teacher = -1
        self.action_at = self.teacher_at = -math.inf
        self.reward, self.episode = 0.0, 0
        self._frame, self.frame_at = None, -math.inf
        self.steps = self.stored = self.frames_stored = 0
        self.store_errors, self.store_error = 0, ''
        self.frame_errors, self.frame_error = 0, ''

    # ----------------------------------------------------------------- inputs
    def put_feature(self, modality: str, vector, trust: float, stamp_s: float,
                    now_s: float | None = None) -> None:
        """Keep the newest feature of ``modality``; FeatureRejected says why it cannot."""
        self.buffer.put(modality, vector, trust, stamp_s, now_s)

    def set_action(self, action_id: int, wall_s: float) -> None:
        """Note the action the robot took (a discrete id)."""
        self.action, self.action_at = int(action_id), wall_s

    def set_teacher(self, action_id: int, wall_s: float) -> None:
        """Note the teacher's action for the current state (a label for sleep)."""
        self.teacher, self.teacher_at = int(action_id), wall_s

    def add_reward(self, reward: float) -> None:
        """Add a reward to this step's; ValueError for a non-finite or absurd one."""
        if not math.isfinite(reward) or abs(reward) > MAX_ABS_REWARD:
            raise ValueError(f'reward {reward} is not finite within ±{MAX_ABS_REWARD:g}')
        self.reward += float(reward)
        self.snarc.learn(reward)

    def set_episode(self, episode: int) -> None:
        """Set the world's episode number (steps are stored under it); ValueError if absurd."""
        if not 0 <= int(episode) < 2**31:
            raise ValueError(f'episode {episode} is out of range (0 to 2^31 - 1)')
        self.episode = int(episode)

    def offer_frame(self, frame: Callable[[], np.ndarray]) -> None:
        """Offer the latest camera frame; ``frame()`` converts it only if it gets stored."""
        self._frame = frame

    def labels(self, wall_s: float) -> tuple[int, int]:
        """Return (action, teacher), each -1 when stale: a stopped teacher labels nothing."""
        limit = self.config.label_timeout_s
        return (self.action if wall_s - self.action_at <= limit else -1,
                self.teacher if wall_s - self.teacher_at <= limit else -1)

    # ----------------------------------------------------------------- the step
    def _open_store(self) -> ExperienceStore:
        c = self.config
        return ExperienceStore(c.store_path, dict(c.modalities), max_rows=c.max_rows,
                               max_frames=c.max_frames, shared=shared_spans(c.modalities))

    def step(self, now_s: float, wall_s: float | None = None) -> Recollection | None:
        """Score and remember the current moment; None while nothing is sensed.

        Nothing is sensed before any feature arrived, or when every modality dropped: a
        robot asleep has no moments.
        """
        if not self.buffer.latest:
            return None
        vectors, trust, age = self.buffer.snapshot(now_s)
        if all(age[i] >= self.buffer.drop_after[m] for i, m in enumerate(self.buffer.dims)):
            return None
        wall_s = time.monotonic() if wall_s is None else wall_s
        x = np.concatenate([vectors[m] for m in self.config.modalities]).astype(np.float32)
        key = self.sidecar.key(x)
        recalled, confidence = self.sidecar.read(key=key)
        action, teacher = self.labels(wall_s)
        scores = self.snarc.score(x, 1.0 - confidence, self.reward, action, teacher)
        self.sidecar.write(None, x, scores.total, key=key)
        stored = scores.total >= self.config.store_threshold and self._store(
            Step(self.episode, now_s, x, trust, age, action, teacher, self.reward,
                 scores.total))
        if stored:
            self._store_frame(now_s, scores.total)
        self.steps += 1
        self.reward = 0.0
        return Recollection(scores, stored, recalled, confidence, trust)

    def _store(self, step: Step) -> bool:
        try:
            self.store.insert(step)
        except (StoreError, sqlite3.Error, OSError) as exc:    # e.g. disk full: keep running
            self.store_errors += 1
            self.store_error = (f'{exc} (is the disk full, or {self.config.store_path} '
                                f'read-only? storing resumes once it can write)')
            return False
        self.stored += 1
        self.store_error = ''
        return True

    def _store_frame(self, now_s: float, salience: float) -> None:
        if self._frame is None or now_s - self.frame_at < self.config.frame_period_s \
                or self.config.frame_period_s <= 0:
            return
        frame, self._frame, self.frame_at = self._frame, None, now_s
        try:
            self.store.insert_frame(self.episode, now_s, frame(), salience)
            self.frames_stored += 1
            self.frame_error = ''
        except (ValueError, StoreError, sqlite3.Error, OSError) as exc:  # not fatal
            self.frame_errors, self.frame_error = self.frame_errors + 1, str(exc)

    # ----------------------------------------------------------------- queries
    def recall(self, query) -> tuple[np.ndarray, float]:
        """Recall for a state vector, a key, or (empty) the current state; ValueError if bad."""
        q = np.asarray(query, np.float64)
        if q.ndim != 1 or not np.all(np.isfinite(q)):
            raise ValueError('the query must be a finite vector')
        if q.size == 0:
            vectors, _, _ = self.buffer.snapshot(max((x.stamp_s for x in
                                                      self.buffer.latest.values()),
                                                     default=0.0))
            q = np.concatenate([vectors[m] for m in self.config.modalities])
        if q.size == self.sidecar.d and q.size != self.sidecar.input_dim:
            return self.sidecar.read(key=self.sidecar.as_key(q.astype(np.float32)))
        return self.sidecar.read(q.astype(np.float32))    # a state vector: projected

    # ----------------------------------------------------------------- persistence
    def _load_sidecar(self, input_dim: int) -> Sidecar:
        c, path = self.config, self.config.sidecar_path

        def load(p):
            mem = Sidecar.load(p)
            if mem.input_dim != input_dim:
                raise SidecarError(f'it holds {mem.input_dim}-d inputs, the memory is '
                                   f'configured for {input_dim}')
            return mem
        mem, note = snapshot.restore(path, load) if path else (None, '')
        if mem is not None:
            self.log(f'loaded sidecar ({mem.writes} writes, fill {mem.fill:.0%}) from {path}')
            return mem
        if note:
            self.sidecar_note = f'sidecar {note}'
            self.log(f'sidecar {note}; starting with an empty memory')
        return Sidecar(input_dim, d=c.key_dim, r=c.slots, forget=c.forget)

    def save(self, path: str | None = None) -> str:
        """Save the sidecar atomically (OSError when it cannot); return where."""
        return self.sidecar.save(path or self.config.sidecar_path)

    def close(self) -> None:
        """Close the experience store."""
        self.store.close()
