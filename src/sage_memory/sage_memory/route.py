"""Routes over the remembered grid: the next waypoint towards each remembered place.

One Dijkstra from the robot's cell over the spatial memory's occupancy grid (8
neighbours, scipy's csgraph) gives the shortest path to every cell at once; the places
feature then asks for the path to each landmark and to the frontier. Occupied cells,
grown by ``clearance_m`` (the robot's radius), are never passed through, though a path
may end in one (a beacon's own surface is where the robot goes). Cells within
``caution_m`` of an occupied one cost ``caution_cost`` times more, so paths keep their
distance; unknown floor is optimistic (it costs as much as free floor): a path into
the unknown is a guess the camera will correct. The waypoint is the first path cell
``lookahead_m`` away from the robot (or the goal when it is nearer), so steering at it
follows the path around what is in the way.

A* with an admissible heuristic finds the same lengths; one Dijkstra serves every goal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from sage_memory.spatial import SpatialMemory

STEPS = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if di or dj]


@dataclass
class RouteConfig:
    """How paths keep clear of what the grid holds."""

    clearance_m: float = 0.25       # never closer to an occupied cell (the robot's radius)
    caution_m: float = 0.6          # nearer than this costs more
    caution_cost: float = 3.0
    lookahead_m: float = 0.6        # the waypoint's distance along the path
    reach_m: float = 0.5            # a goal is reached within this of the place


class Routes:
    """Shortest paths from the robot over one SpatialMemory's grid (see the module doc)."""

    def __init__(self, memory: SpatialMemory, x: float, y: float,
                 config: RouteConfig | None = None, plan: bool = True):
        """Plan from (x, y) in odom; ``plan`` False: no paths (every goal straight ahead)."""
        self.cfg = c = config or RouteConfig()
        self.memory, self.x, self.y = memory, float(x), float(y)
        cell, n = memory.cfg.cell_m, memory.log_odds.shape[0]
        self.n, self.cell = n, cell
        occupied = memory.log_odds > 0
        blocked = _grow(occupied, c.clearance_m / cell)
        cost = np.where(_grow(occupied, c.caution_m / cell), c.caution_cost, 1.0)
        col, row = memory.cell(self.x, self.y)
        self.source = None
        if not plan or not (0 <= row < n and 0 <= col < n):
            return                      # off the grid: no routes, the feature goes direct
        blocked[max(row - 1, 0):row + 2, max(col - 1, 0):col + 2] = False   # leave from here
        index = np.arange(n * n).reshape(n, n)
        src, dst, w = [], [], []
        for di, dj in STEPS:
            rows = slice(max(-di, 0), n - max(di, 0))
            cols = slice(max(-dj, 0), n - max(dj, 0))
            to_rows = slice(max(di, 0), n - max(-di, 0))
            to_cols = slice(max(dj, 0), n - max(-dj, 0))
            leaves = ~blocked[rows, cols]            # a blocked cell is a dead end
            src.append(index[rows, cols][leaves])
            dst.append(index[to_rows, to_cols][leaves])
            w.append((math.hypot(di, dj) * cell * cost[to_rows, to_cols])[leaves])
        graph = csr_matrix((np.concatenate(w), (np.concatenate(src), np.concatenate(dst))),
                           shape=(n * n, n * n))
        self.source = int(row * n + col)
        self.dist, self.pred = dijkstra(graph, indices=self.source, return_predecessors=True)

    def length_to_cells(self, rows, cols) -> np.ndarray:
        """Path cost (m, caution included) to grid cells; the straight line without paths."""
        rows, cols = np.asarray(rows), np.asarray(cols)
        if self.source is None:
            half = 0.5 * self.memory.cfg.grid_size_m
            return np.hypot((cols + 0.5) * self.cell - half - self.x,
                            (rows + 0.5) * self.cell - half - self.y)
        return self.dist[rows * self.n + cols]

    def to(self, gx: float, gy: float):
        """Return (waypoint x, y, path length m) towards (gx, gy) in odom, or None.

        None: no path is known (off the grid, or walled in by what the grid holds).
        """
        direct = math.hypot(gx - self.x, gy - self.y)
        if direct <= self.cfg.reach_m:
            return gx, gy, direct
        if self.source is None:
            return None
        cell, n, half = self.cell, self.n, 0.5 * self.memory.cfg.grid_size_m
        centres = (np.arange(n) + 0.5) * cell - half
        near = np.abs(centres - gx) <= self.cfg.reach_m, np.abs(centres - gy) <= self.cfg.reach_m
        cols, rows = np.nonzero(near[0])[0], np.nonzero(near[1])[0]
        if not len(cols) or not len(rows):
            return None
        rr, cc = np.meshgrid(rows, cols, indexing='ij')
        within = np.hypot(centres[cc] - gx, centres[rr] - gy) <= self.cfg.reach_m
        goals = (rr * n + cc)[within]
        if not len(goals):
            return None
        goal = int(goals[np.argmin(self.dist[goals])])
        if not math.isfinite(self.dist[goal]):
            return None
        path = [goal]
        while path[-1] != self.source:
            path.append(int(self.pred[path[-1]]))
        px, py = centres[np.array(path) % n], centres[np.array(path) // n]
        far = np.nonzero(np.hypot(px - self.x, py - self.y)[::-1] >= self.cfg.lookahead_m)[0]
        if len(far):
            k = len(path) - 1 - int(far[0])
            wx, wy = float(px[k]), float(py[k])
        else:
            wx, wy = gx, gy
        # the path's own length (dist is weighted by caution), robot to goal to place
        length = math.hypot(px[-1] - self.x, py[-1] - self.y) + \
            float(np.hypot(np.diff(px), np.diff(py)).sum()) + math.hypot(gx - px[0], gy - py[0])
        return wx, wy, length


def _grow(mask: np.ndarray, cells: float) -> np.ndarray:
    """Dilate ``mask`` by a disc of ``cells`` radius."""
    r = int(math.ceil(cells))
    if r <= 0:
        return mask.copy()
    d = np.arange(-r, r + 1)
    disc = np.hypot(d[:, None], d[None, :]) <= cells + 1e-9
    return binary_dilation(mask, structure=disc)
