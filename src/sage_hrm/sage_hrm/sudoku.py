"""Sudoku puzzles generated locally and deterministically by seed, with a difficulty rating.

Grids are numpy int arrays [N, N] (N = box**2: 4 or 9), 0 = blank. The solver propagates
naked singles only and then guesses (depth-first, fewest candidates first); the number of
guesses it needs is the difficulty rating (0 = solvable by singles alone; the hard set has
``>= 3``). Puzzles have a unique solution (checked by counting solutions up to 2).

Token encoding as the reference (vocab ``N + 2``): 0 pad, 1 blank, ``d + 1`` for digit d.

Train and test sets are disjoint by construction: each puzzle is reduced to a canonical
form that ignores the digit labels (digits renumbered by first appearance) and a test
puzzle is rejected when its canonical form, or that of its transpose, is in the train set.
"""

from __future__ import annotations

import numpy as np


def _peers(n: int, box: int) -> list[list[int]]:
    peers = []
    for cell in range(n * n):
        r, c = divmod(cell, n)
        br, bc = r // box * box, c // box * box
        s = {r * n + j for j in range(n)} | {i * n + c for i in range(n)}
        s |= {(br + i) * n + bc + j for i in range(box) for j in range(box)}
        s.discard(cell)
        peers.append(sorted(s))
    return peers


_PEERS: dict[int, list[list[int]]] = {}


def peers_of(n: int) -> list[list[int]]:
    """Peer cell lists for an n x n grid (cached)."""
    if n not in _PEERS:
        _PEERS[n] = _peers(n, int(round(n ** 0.5)))
    return _PEERS[n]


def _propagate(cand: list[int], peers, full: int) -> bool:
    """Apply naked singles until a fixed point; False on contradiction."""
    changed = True
    while changed:
        changed = False
        for cell, m in enumerate(cand):
            if m == 0:
                return False
            if m & (m - 1) == 0:
                for p in peers[cell]:
                    if cand[p] & m:
                        cand[p] &= ~m
                        if cand[p] == 0:
                            return False
                        changed = True
    return True


def solve(grid: np.ndarray, limit: int = 2, rng: np.random.Generator | None = None):
    """Solve ``grid``; return (solutions up to ``limit``, guesses made to find the first).

    With ``rng`` the guess order is random (used to generate full grids).
    """
    n = grid.shape[0]
    full = (1 << n) - 1
    peers = peers_of(n)
    cand = [full if v == 0 else 1 << (int(v) - 1) for v in grid.reshape(-1)]
    sols: list[np.ndarray] = []
    stats = {'guesses': 0, 'first': None}

    def rec(cand):
        if len(sols) >= limit or not _propagate(cand, peers, full):
            return
        best, bestc = -1, n + 1
        for cell, m in enumerate(cand):
            k = bin(m).count('1')
            if 1 < k < bestc:
                best, bestc = cell, k
        if best < 0:
            sols.append(np.array([m.bit_length() for m in cand], dtype=np.int64).reshape(n, n))
            if stats['first'] is None:
                stats['first'] = stats['guesses']
            return
        digits = [d for d in range(n) if cand[best] >> d & 1]
        if rng is not None:
            rng.shuffle(digits)
        for d in digits:
            if stats['first'] is None:
                stats['guesses'] += 1
            c2 = list(cand)
            c2[best] = 1 << d
            rec(c2)
            if len(sols) >= limit:
                return

    rec(cand)
    return sols, (stats['first'] if stats['first'] is not None else stats['guesses'])


def rate(puzzle: np.ndarray) -> int:
    """Difficulty: guesses the singles-then-guess solver needs (0 = singles only)."""
    return solve(puzzle, limit=1)[1]


def is_solution(sol: np.ndarray, puzzle: np.ndarray | None = None) -> bool:
    """Return True when ``sol`` is a complete valid grid (and agrees with ``puzzle``'s clues)."""
    n = sol.shape[0]
    box = int(round(n ** 0.5))
    want = set(range(1, n + 1))
    for i in range(n):
        if set(sol[i].tolist()) != want or set(sol[:, i].tolist()) != want:
            return False
    for br in range(0, n, box):
        for bc in range(0, n, box):
            if set(sol[br:br + box, bc:bc + box].reshape(-1).tolist()) != want:
                return False
    return puzzle is None or bool(np.all((puzzle == 0) | (puzzle == sol)))


def generate(rng: np.random.Generator, box: int = 3, min_guesses: int = 0,
             max_guesses: int | None = None, min_blanks: int = 0,
             max_blanks: int | None = None, tries: int = 200):
    """One puzzle with a unique solution: (puzzle, solution, rating).

    Cells are removed in random order while the solution stays unique, stopping at
    ``max_blanks``; the result is rejected unless its rating is in range.
    """
    n = box * box
    for _ in range(tries):
        sol = solve(np.zeros((n, n), dtype=np.int64), limit=1, rng=rng)[0][0]
        puzzle = sol.copy()
        blanks = 0
        cap = n * n if max_blanks is None else max_blanks
        for cell in rng.permutation(n * n):
            if blanks >= cap:
                break
            r, c = divmod(int(cell), n)
            keep = puzzle[r, c]
            puzzle[r, c] = 0
            if len(solve(puzzle, limit=2)[0]) != 1:
                puzzle[r, c] = keep
                continue
            if max_guesses is not None and max_guesses == 0 and rate(puzzle) > 0:
                puzzle[r, c] = keep  # keep singles-only puzzles singles-only
                continue
            blanks += 1
        g = rate(puzzle)
        if blanks >= min_blanks and g >= min_guesses and (max_guesses is None or g <= max_guesses):
            return puzzle, sol, g
    raise RuntimeError('no puzzle in range after %d tries' % tries)


def canonical(puzzle: np.ndarray) -> bytes:
    """Key of a puzzle up to digit relabelling (digits renumbered by first appearance)."""
    flat = puzzle.reshape(-1)
    mapping: dict[int, int] = {0: 0}
    out = np.empty_like(flat)
    for i, v in enumerate(flat.tolist()):
        if v not in mapping:
            mapping[v] = len(mapping)
        out[i] = mapping[v]
    return out.astype(np.int8).tobytes()


def make_dataset(seed: int, n_train: int, n_test: int, box: int = 3, **kw) -> dict:
    """Train and test sets (puzzles, solutions, ratings), disjoint by canonical form.

    ``kw`` goes to :func:`generate` (e.g. ``min_guesses=3`` for the hard set).
    """
    rng = np.random.default_rng(seed)
    seen: set[bytes] = set()
    out = {}
    for split, count in (('train', n_train), ('test', n_test)):
        ps, ss, gs = [], [], []
        while len(ps) < count:
            p, s, g = generate(rng, box=box, **kw)
            keys = {canonical(p), canonical(p.T)}
            if keys & seen:
                continue
            seen |= keys
            ps.append(p)
            ss.append(s)
            gs.append(g)
        shape = (0, box * box, box * box)
        out[split] = (np.stack(ps) if ps else np.zeros(shape, np.int64),
                      np.stack(ss) if ss else np.zeros(shape, np.int64), np.array(gs))
    return out


def augment(puzzle: np.ndarray, solution: np.ndarray, rng: np.random.Generator):
    """Apply a random validity-preserving transform applied to puzzle and solution alike.

    Digit permutation, band and stack permutations, row/column permutations within
    bands/stacks, and an optional transpose.
    """
    n = puzzle.shape[0]
    box = int(round(n ** 0.5))
    digits = np.concatenate([[0], rng.permutation(n) + 1])
    rows = np.concatenate([b * box + rng.permutation(box) for b in rng.permutation(box)])
    cols = np.concatenate([b * box + rng.permutation(box) for b in rng.permutation(box)])
    transpose = bool(rng.integers(2))

    def tf(g):
        g = digits[g][rows][:, cols]
        return g.T.copy() if transpose else g

    return tf(puzzle), tf(solution)


def to_tokens(grids: np.ndarray) -> np.ndarray:
    """Grids [..., N, N] (0 blank) -> token ids [..., N*N] (1 blank, d+1 digit)."""
    return (grids.reshape(*grids.shape[:-2], -1) + 1).astype(np.int64)


def from_tokens(tokens: np.ndarray, n: int) -> np.ndarray:
    """Token ids [..., N*N] -> grids [..., N, N] (0 for pad/blank)."""
    return np.clip(tokens - 1, 0, n).reshape(*tokens.shape[:-1], n, n)


def vocab_size(box: int = 3) -> int:
    """Token vocabulary for a box**2 grid."""
    return box * box + 2


def augment_tokens(x, y, generator=None, box: int = 3):
    """Batched :func:`augment` on token tensors [B, N*N] (torch, CPU or GPU).

    Each sample gets its own digit permutation, band/stack and row/column-in-band
    permutations and transpose flag; puzzle and solution get the same transform. The
    random draws come from ``generator`` (a ``torch.Generator`` on the CPU), so a run is
    reproducible and resumable.
    """
    import torch
    n = box * box
    b = x.shape[0]

    def perms(k, size):
        return torch.argsort(torch.rand(b, k, size, generator=generator), dim=-1)

    digit = perms(1, n)[:, 0] + 2                       # token d+1 -> perm[d]+1 (d in 1..n)
    table = torch.cat((torch.arange(2).expand(b, 2), digit), 1)   # pad, blank kept
    bands, inner = perms(1, box)[:, 0], perms(box, box)
    stacks, inner_c = perms(1, box)[:, 0], perms(box, box)
    rows = (bands[:, :, None] * box + torch.gather(inner, 1, bands[:, :, None].expand(
        b, box, box))).reshape(b, n)
    cols = (stacks[:, :, None] * box + torch.gather(inner_c, 1, stacks[:, :, None].expand(
        b, box, box))).reshape(b, n)
    idx = rows[:, :, None] * n + cols[:, None, :]       # new[r, c] = old[rows[r], cols[c]]
    flip = torch.rand(b, generator=generator) < 0.5
    idx = torch.where(flip[:, None, None], idx.transpose(1, 2), idx).reshape(b, n * n)
    dev = x.device
    idx, table = idx.to(dev), table.to(dev)

    def tf(t):
        return torch.gather(table, 1, torch.gather(t.long(), 1, idx)).to(t.dtype)

    return tf(x), tf(y)
