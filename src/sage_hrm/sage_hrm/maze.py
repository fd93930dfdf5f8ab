"""Mazes with shortest paths, generated deterministically by seed, scored by validity.

A maze is an n x n grid (n odd): a random depth-first maze with some extra walls knocked
down, so that several shortest paths often exist. Tokens (``VOCAB`` = 6): 0 pad, 1 wall,
2 open, 3 start, 4 goal, 5 path. The label marks one shortest path; a prediction is scored
"valid and optimal" when its path cells connect start to goal through open cells with
exactly the shortest length, whichever shortest path it is (not by match to the label).
Train and test are disjoint by construction (a test maze equal to a train maze is skipped).
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

WALL, OPEN, START, GOAL, PATH = 1, 2, 3, 4, 5
VOCAB = 6


def generate(rng: np.random.Generator, n: int = 9, loops: float = 0.1) -> np.ndarray:
    """Return a maze grid of tokens (walls/open/start/goal), start and goal far apart."""
    g = np.full((n, n), WALL, dtype=np.int64)
    cells = [(r, c) for r in range(1, n - 1, 2) for c in range(1, n - 1, 2)]
    start = cells[rng.integers(len(cells))]
    stack, seen = [start], {start}
    g[start] = OPEN
    while stack:
        r, c = stack[-1]
        nbrs = [(r + dr, c + dc) for dr, dc in ((2, 0), (-2, 0), (0, 2), (0, -2))
                if 0 < r + dr < n - 1 and 0 < c + dc < n - 1 and (r + dr, c + dc) not in seen]
        if not nbrs:
            stack.pop()
            continue
        nr, nc = nbrs[rng.integers(len(nbrs))]
        g[(r + nr) // 2, (c + nc) // 2] = OPEN
        g[nr, nc] = OPEN
        seen.add((nr, nc))
        stack.append((nr, nc))
    inner = [(r, c) for r in range(1, n - 1) for c in range(1, n - 1) if g[r, c] == WALL]
    for i in rng.permutation(len(inner))[:int(loops * len(inner))]:
        g[inner[i]] = OPEN
    dist = _bfs(g, start)
    far = max(dist, key=dist.get)
    g[start], g[far] = START, GOAL
    return g


def _bfs(g: np.ndarray, src, allowed=None) -> dict:
    n = g.shape[0]
    dist, q = {src: 0}, deque([src])
    while q:
        r, c = q.popleft()
        for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= nr < n and 0 <= nc < n and (nr, nc) not in dist and g[nr, nc] != WALL and \
                    (allowed is None or (nr, nc) in allowed):
                dist[(nr, nc)] = dist[(r, c)] + 1
                q.append((nr, nc))
    return dist


def _ends(g: np.ndarray):
    s = tuple(int(v) for v in np.argwhere(g == START)[0])
    e = tuple(int(v) for v in np.argwhere(g == GOAL)[0])
    return s, e


def shortest_path(g: np.ndarray) -> np.ndarray:
    """Label: ``g`` with the cells of one shortest path (excluding ends) set to PATH."""
    s, e = _ends(g)
    dist = _bfs(g, e)
    out, cur = g.copy(), s
    while cur != e:
        r, c = cur
        cur = min(((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)),
                  key=lambda p: dist.get(p, 1 << 30))
        if cur != e:
            out[cur] = PATH
    return out


def solvable(g: np.ndarray) -> bool:
    """Return True when open cells connect ``g``'s start to its goal."""
    s, e = _ends(g)
    return e in _bfs(g, s)


def valid_optimal(maze: np.ndarray, pred: np.ndarray) -> bool:
    """Return True when the PATH cells of ``pred`` form a shortest start-goal path."""
    s, e = _ends(maze)
    cells = {tuple(int(v) for v in p) for p in np.argwhere(pred == PATH)}
    if any(maze[c] != OPEN for c in cells):
        return False
    d = _bfs(maze, s).get(e)
    if d is None or len(cells) != d - 1:
        return False
    return e in _bfs(maze, s, allowed=cells | {e})


def make_dataset(seed: int, n_train: int, n_test: int, n: int = 9) -> dict:
    """Token arrays ``{train,test}_{inputs,labels}`` [N, n*n]; splits disjoint."""
    rng = np.random.default_rng(seed)
    seen: set[bytes] = set()
    out = {}
    for split, count in (('train', n_train), ('test', n_test)):
        xs, ys = [], []
        while len(xs) < count:
            g = generate(rng, n)
            if g.tobytes() in seen:
                continue
            seen.add(g.tobytes())
            xs.append(g.reshape(-1))
            ys.append(shortest_path(g).reshape(-1))
        out[f'{split}_inputs'] = np.stack(xs) if xs else np.zeros((0, n * n), np.int64)
        out[f'{split}_labels'] = np.stack(ys) if ys else np.zeros((0, n * n), np.int64)
    return out


@torch.no_grad()
def score_model(model, inputs: np.ndarray, device: str = 'cpu') -> float:
    """Fraction of mazes whose predicted path (after halt_max_steps segments) is valid+optimal."""
    from sage_hrm.inference import ACTRunner
    model.eval()
    out = ACTRunner(model, use_q_halt=False)(
        {'inputs': torch.as_tensor(inputs, device=device)})
    pred = out['logits'].argmax(-1).cpu().numpy()
    n = int(round(inputs.shape[1] ** 0.5))
    return float(np.mean([valid_optimal(x.reshape(n, n), p.reshape(n, n))
                          for x, p in zip(inputs, pred)]))
