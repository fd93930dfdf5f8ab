"""SNARC salience of a time step: Surprise, Novelty, Arousal, Reward, Conflict.

ROS-free. Every score is in [0, 1]; the total is their weighted mean.

Surprise   error of an online linear predictor of each modality's next input (NLMS),
           relative to its running typical error. A wide modality is first reduced to
           ``surprise_dims`` by a fixed random projection (lengths of errors survive it,
           Johnson-Lindenstrauss), so a step costs O(n) and not O(n²): one predictor over
           the whole 5,236-float input was a 110 MB matrix and most of a core at 10 Hz.
Novelty    1 - the memory's recall confidence for the current state.
Arousal    how far the input moved from its running mean, in running standard
           deviations (signal energy of the change).
Reward     |reward| squashed (good and bad outcomes are both worth remembering).
Conflict   disagreement: between modalities (one surprised while others are not)
           and between the action taken and the teacher's (or cognition's) action.

The weights are configurable and can learn from outcomes: ``learn(reward)`` moves
them, by a delta rule, towards the components that predicted |reward|.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NAMES = ('surprise', 'novelty', 'arousal', 'reward', 'conflict')


@dataclass
class Scores:
    """One step's SNARC scores."""

    surprise: float
    novelty: float
    arousal: float
    reward: float
    conflict: float
    total: float

    def vector(self) -> np.ndarray:
        """Return the five components in SNARC order."""
        return np.array([getattr(self, n) for n in NAMES], np.float32)


class Snarc:
    """Score time steps; see the module doc. ``dims``: length of each modality's part."""

    def __init__(self, dims: list[int], weights=(0.25, 0.2, 0.15, 0.25, 0.15),
                 lr: float = 0.5, ema: float = 0.02, weight_lr: float = 0.0,
                 surprise_dims: int = 32):
        self.dims = [int(d) for d in dims]
        self.n = n = sum(self.dims)
        self.weights = self._normalised(weights)
        self.lr, self.ema, self.weight_lr = lr, ema, weight_lr
        rng = np.random.default_rng(0)      # fixed: the same projection in every process
        self.project = [np.eye(d, dtype=np.float32) if d <= surprise_dims else
                        (rng.standard_normal((surprise_dims, d)) / np.sqrt(surprise_dims))
                        .astype(np.float32) for d in self.dims]
        # one next-input predictor (NLMS) per modality, over its projection
        self.W = [np.zeros((len(P), len(P)), np.float32) for P in self.project]
        self.prev = None
        self.mean = np.zeros(n, np.float32)
        self.var = np.ones(n, np.float32)
        self.err_ref = np.ones(len(self.dims), np.float32)
        self.last = None

    @staticmethod
    def _normalised(w) -> np.ndarray:
        w = np.clip(np.asarray(w, np.float32), 0.0, None)
        if w.shape != (len(NAMES),) or w.sum() <= 0:
            raise ValueError(f'weights must be {len(NAMES)} non-negative numbers, not all 0')
        return w / w.sum()

    def score(self, x, novelty: float, reward: float = 0.0, action: int = -1,
              teacher: int = -1) -> Scores:
        """Score the step whose input is ``x`` (the concatenated modality features)."""
        x = np.asarray(x, np.float32)
        if x.shape != (self.n,) or not np.isfinite(x).all():
            raise ValueError(f'expected {self.n} finite floats, got {x.shape}')
        if not (np.isfinite(novelty) and np.isfinite(reward)):
            raise ValueError(f'novelty {novelty} and reward {reward} must be finite')
        # surprise, per modality, from the prediction made at the previous step
        per = np.zeros(len(self.dims), np.float32)
        seen = [P @ part for P, part in zip(self.project, np.split(x, np.cumsum(self.dims)[:-1]))]
        if self.prev is not None:
            e = np.zeros(len(self.dims), np.float32)
            for i, (W, now, before) in enumerate(zip(self.W, seen, self.prev)):
                err = now - W @ before
                W += self.lr * np.outer(err, before) / (before @ before + 1e-3)
                e[i] = np.mean(err ** 2)
            per = e / (e + self.err_ref)
            self.err_ref += self.ema * (e - self.err_ref)
        self.prev = seen
        surprise = float(per.mean())
        # arousal: distance from the running mean in running standard deviations
        z = np.abs(x - self.mean) / np.sqrt(self.var + 1e-6)
        arousal = float(np.tanh(z.mean() / 3.0))
        d = x - self.mean
        self.mean += self.ema * d
        self.var += self.ema * (d * d - self.var)
        disagree = float(action >= 0 and teacher >= 0 and action != teacher)
        conflict = max(disagree, float(per.max() - per.min()) if len(per) > 1 else 0.0)
        comps = np.array([surprise, float(np.clip(novelty, 0, 1)), arousal,
                          float(np.tanh(abs(reward) * 3.0)), conflict], np.float32)
        self.last = comps
        total = float(np.clip(self.weights @ comps, 0.0, 1.0))
        return Scores(*map(float, comps), total)

    def learn(self, reward: float) -> None:
        """Move the weights towards the components that predicted this |reward| (delta rule)."""
        if self.last is None or self.weight_lr <= 0 or not np.isfinite(reward):
            return
        target = float(np.tanh(abs(reward) * 3.0))
        error = target - float(self.weights @ self.last)
        self.weights = self._normalised(np.maximum(
            self.weights + self.weight_lr * error * self.last, 1e-3))
