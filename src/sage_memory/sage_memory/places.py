"""The places feature: what the spatial memory holds, as tokens the coherence model fuses.

One token per remembered landmark, nearest first, seen from the robot's current odom
pose (so a target that left the camera's view still has a direction), and one for the
nearest unexplored frontier of the grid (where to look next):

    valid, cos(bearing), sin(bearing), range, confidence, age, times seen, in view,
    is frontier, cos and sin of the bearing of the next waypoint on the shortest path
    over the remembered grid and the path's length (sage_memory.route: around what the
    grid holds; the straight line when no path is known), label embedding (the sentence
    embedding of the label, in the space of the instruction's: a label never seen in
    training can still match an instruction)

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
from sage_common.places_layout import EMBED_DIM, FIELDS, RANGE_SCALE_M

from sage_memory.route import RouteConfig, Routes
from sage_memory.spatial import Landmark, SpatialMemory

START_LABEL = 'where you started'     # the start place's label: "go back to where you started"


@dataclass
class PlacesConfig:
    """How many tokens, and the scales that keep their numbers near [0, 1]."""

    max_tokens: int = 12
    range_scale_m: float = RANGE_SCALE_M
    confidence_scale_m: float = 0.5
    age_scale_s: float = 60.0
    in_view_s: float = 0.25           # seen this recently: in view now
    frontier: bool = True
    frontier_min_m: float = 0.75      # nearer frontier cells are under the robot's nose
    frontier_turn_m: float = 1.0      # a radian of turning costs as much as a metre of path
    routes: bool = True               # False: the straight line (what the routes add)
    start_place: bool = True          # a token for where the robot started (the odom origin)
    route: RouteConfig | None = None  # None: RouteConfig's defaults

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
        places = list(memory.landmarks)
        if c.start_place:             # remembered from the start, long out of view
            places.append(Landmark(START_LABEL, np.zeros(2), np.eye(2) * 0.01, 0.0,
                                   t - c.age_scale_s))
        nearest = sorted(places, key=lambda m: math.hypot(m.mean[0] - x, m.mean[1] - y))
        best = 0.0
        routes = Routes(memory, x, y, c.route, plan=c.routes)
        for token, m in zip(tokens, nearest[:slots]):
            confidence = math.exp(-m.std_m / c.confidence_scale_m)
            if m.label != START_LABEL:
                best = max(best, confidence)
            self._place(token, routes, m.mean[0], m.mean[1], yaw)
            token[4:8] = (confidence, min(1.0, (t - m.last_seen) / c.age_scale_s),
                          min(1.0, math.log1p(m.times_seen) / 5.0),
                          float(t - m.last_seen <= c.in_view_s))
            token[len(FIELDS):] = self.label_vector(m.label)
        frontier = self.frontier(memory, routes, yaw) if c.frontier else None
        if frontier is not None:
            token = tokens[min(len(nearest), slots)]
            self._place(token, routes, frontier[0], frontier[1], yaw)
            token[4], token[8] = 1.0, 1.0
        return Sensed(tokens.reshape(-1), best if memory.landmarks else 1.0,
                      {'landmarks': float(len(memory.landmarks)),
                       'frontier': float(frontier is not None)}, t)

    def _place(self, token, routes: Routes, px: float, py: float, yaw: float) -> None:
        dx, dy = px - routes.x, py - routes.y
        bearing = math.atan2(dy, dx) - yaw
        scale = self.cfg.range_scale_m
        token[:4] = (1.0, math.cos(bearing), math.sin(bearing),
                     min(1.5, math.hypot(dx, dy) / scale))
        route = routes.to(px, py)
        via, length = bearing, math.hypot(dx, dy)     # no known path: the straight line
        if route is not None:
            via = math.atan2(route[1] - routes.y, route[0] - routes.x) - yaw
            length = route[2]
        token[9:12] = (math.cos(via), math.sin(via), min(1.5, length / scale))

    def frontier(self, memory: SpatialMemory, routes: Routes, yaw: float):
        """Return the frontier to explore (odom x, y), or None.

        Frontier cells are free ones beside unknown ones; the one chosen is the cheapest
        to reach: path length plus ``frontier_turn_m`` per radian of turning towards it,
        so the robot keeps exploring ahead instead of turning back and forth.
        """
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
        dx, dy = fx - routes.x, fy - routes.y
        turn = np.abs(np.remainder(np.arctan2(dy, dx) - yaw + np.pi, 2 * np.pi) - np.pi)
        cost = routes.length_to_cells(rows, cols) + self.cfg.frontier_turn_m * turn
        cost[np.hypot(dx, dy) < self.cfg.frontier_min_m] = np.inf
        k = int(cost.argmin())
        return None if not math.isfinite(cost[k]) else (float(fx[k]), float(fy[k]))


def tokens(vector, config: PlacesConfig | None = None) -> np.ndarray:
    """Return the feature vector as [max_tokens, token_dim] (for viewers and tests)."""
    c = config or PlacesConfig()
    return np.asarray(vector, np.float32).reshape(c.max_tokens, c.token_dim)
