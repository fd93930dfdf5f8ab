"""The places feature: what the spatial memory holds, as tokens the coherence model fuses.

One token per remembered landmark, nearest first, seen from the robot's current odom
pose (so a target that left the camera's view still has a direction), and one for the
nearest unexplored frontier of the grid (where to look next):

    valid, cos(bearing), sin(bearing), range, confidence, age, times seen, in view,
    is frontier, label embedding (the sentence embedding of the label, in the space of
    the instruction's: a label never seen in training can still match an instruction)

Bearing is in ``base_link`` (+ left, REP-103), range over ``range_scale_m``, confidence
``exp(-std / confidence_scale_m)`` from the landmark's covariance, age since last seen
over ``age_scale_s``. Unused tokens are all zero (valid 0): the model masks them. The
vector is the ``max_tokens`` tokens concatenated; its trust is the best confidence held
(1 with nothing remembered: an empty memory is not wrong). ROS-free: the memory node
publishes it as ``sage/features/places`` and the offline pipeline calls the same step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from sage_common.features import Sensed

from sage_memory.spatial import SpatialMemory

FIELDS = ('valid', 'cos', 'sin', 'range', 'confidence', 'age', 'seen', 'in_view', 'frontier')
EMBED_DIM = 384


@dataclass
class PlacesConfig:
    """How many tokens, and the scales that keep their numbers near [0, 1]."""

    max_tokens: int = 12
    range_scale_m: float = 8.0
    confidence_scale_m: float = 0.5
    age_scale_s: float = 60.0
    in_view_s: float = 0.25           # seen this recently: in view now
    frontier: bool = True
    frontier_min_m: float = 0.75      # nearer frontier cells are under the robot's nose

    @property
    def token_dim(self) -> int:
        """Numbers per token."""
        return len(FIELDS) + EMBED_DIM

    @property
    def dim(self) -> int:
        """Length of the feature vector."""
        return self.max_tokens * self.token_dim


class PlacesFeature:
    """SpatialMemory + the robot's pose -> the places feature (see the module doc)."""

    def __init__(self, config: PlacesConfig | None = None,
                 embed: Callable[[str], np.ndarray] | None = None):
        self.cfg = config or PlacesConfig()
        if embed is None:
            from sage_cognition.embedding import embed
        self._embed, self._labels = embed, {}

    def load(self) -> None:
        """Load the sentence model now (a node does it while starting, not mid-cycle)."""
        self.label_vector('pillar')

    def label_vector(self, label: str) -> np.ndarray:
        """Return the label's sentence embedding (cached: a world has few labels)."""
        if label not in self._labels:
            if len(self._labels) > 1024:
                self._labels.clear()
            v = np.asarray(self._embed(label), np.float32).reshape(-1)
            if v.shape != (EMBED_DIM,):
                raise ValueError(f'label embeddings must have {EMBED_DIM} numbers, got {v.size}')
            self._labels[label] = v
        return self._labels[label]

    def step(self, memory: SpatialMemory, pose, t: float) -> Sensed:
        """Return the tokens for a robot at ``pose`` (x, y, yaw in odom) at time ``t``."""
        c = self.cfg
        x, y, yaw = (float(v) for v in pose)
        tokens = np.zeros((c.max_tokens, c.token_dim), np.float32)
        slots = c.max_tokens - int(c.frontier)
        nearest = sorted(memory.landmarks, key=lambda m: math.hypot(m.mean[0] - x,
                                                                    m.mean[1] - y))
        best = 0.0
        for token, m in zip(tokens, nearest[:slots]):
            confidence = math.exp(-m.std_m / c.confidence_scale_m)
            best = max(best, confidence)
            self._place(token, m.mean[0] - x, m.mean[1] - y, yaw)
            token[4:8] = (confidence, min(1.0, (t - m.last_seen) / c.age_scale_s),
                          min(1.0, math.log1p(m.times_seen) / 5.0),
                          float(t - m.last_seen <= c.in_view_s))
            token[len(FIELDS):] = self.label_vector(m.label)
        frontier = self.frontier(memory, x, y) if c.frontier else None
        if frontier is not None:
            token = tokens[min(len(nearest), slots)]
            self._place(token, frontier[0] - x, frontier[1] - y, yaw)
            token[4], token[8] = 1.0, 1.0
        return Sensed(tokens.reshape(-1), best if memory.landmarks else 1.0,
                      {'landmarks': float(len(memory.landmarks)),
                       'frontier': float(frontier is not None)}, t)

    def _place(self, token, dx: float, dy: float, yaw: float) -> None:
        bearing = math.atan2(dy, dx) - yaw
        token[:4] = (1.0, math.cos(bearing), math.sin(bearing),
                     min(1.5, math.hypot(dx, dy) / self.cfg.range_scale_m))

    def frontier(self, memory: SpatialMemory, x: float, y: float):
        """Return the nearest free cell beside unknown ones (odom x, y), or None."""
        lo = memory.log_odds
        free, unknown = lo < 0, lo == 0
        beside = np.zeros_like(unknown)
        beside[1:] |= unknown[:-1]
        beside[:-1] |= unknown[1:]
        beside[:, 1:] |= unknown[:, :-1]
        beside[:, :-1] |= unknown[:, 1:]
        rows, cols = np.nonzero(free & beside)
        if not len(rows):
            return None
        cell, half = memory.cfg.cell_m, 0.5 * memory.cfg.grid_size_m
        fx, fy = (cols + 0.5) * cell - half, (rows + 0.5) * cell - half
        d = np.hypot(fx - x, fy - y)
        d[d < self.cfg.frontier_min_m] = np.inf
        k = int(d.argmin())
        return None if not math.isfinite(d[k]) else (float(fx[k]), float(fy[k]))


def tokens(vector, config: PlacesConfig | None = None) -> np.ndarray:
    """Return the feature vector as [max_tokens, token_dim] (for viewers and tests)."""
    c = config or PlacesConfig()
    return np.asarray(vector, np.float32).reshape(c.max_tokens, c.token_dim)
