"""Memory benchmark: sidecar speed, constant footprint, store insert rate, recall capacity.

    python bench/memory.py [--writes N]  ->  bench/results/memory.json, memory_capacity.png
    summary: read_write_us, footprint_bytes_after_1m_writes, store_inserts_per_s,
             recall_at_capacity_sidecar, recall_at_capacity_knn, salient_recall_sidecar,
             salient_recall_knn

Recall: N patterns (key 256, value 64) are written with noise, then queried with
corrupted keys; a pattern counts as recalled when the readout's cosine with its
value exceeds 0.9. The baseline is an exact nearest-neighbour memory of equal size
(r key/value pairs, the oldest replaced first). The gate: 10% salient events among
routine ones, N = 4r; how many salient events each memory still recalls.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import psutil
from common import RESULTS, write
from sage_memory.sidecar import Sidecar
from sage_memory.store import ExperienceStore, Step

D, R, DV = 256, 64, 64


class NearestNeighbour:
    """Exact nearest neighbour over the last ``r`` (key, value) pairs: the sidecar's size."""

    def __init__(self, mem: Sidecar):
        self.P, self.r = mem.P, mem.r
        self.keys, self.values, self.next = np.zeros((mem.r, mem.d), np.float32), \
            np.zeros((mem.r, mem.value_dim), np.float32), 0

    def write(self, x, v, salience=1.0):
        k = self.P @ x
        self.keys[self.next % self.r], self.values[self.next % self.r] = k / np.linalg.norm(k), v
        self.next += 1

    def read(self, x):
        k = self.P @ x
        return self.values[int(np.argmax(self.keys @ (k / np.linalg.norm(k))))], 1.0


def recall_fraction(mem, X, Y, rng, which=None, noise=0.3):
    hits = []
    for i in (range(len(X)) if which is None else which):
        r, _ = mem.read(X[i] + noise * rng.standard_normal(D).astype(np.float32))
        hits.append(r @ Y[i] / (np.linalg.norm(r) * np.linalg.norm(Y[i]) + 1e-9) > 0.9)
    return float(np.mean(hits))


def capacity(ns, seed=0):
    out = []
    for n in ns:
        rng = np.random.default_rng(seed + n)
        X = rng.standard_normal((n, D)).astype(np.float32)
        Y = rng.standard_normal((n, DV)).astype(np.float32)
        side = Sidecar(D, d=D, r=R, value_dim=DV, seed=seed)
        knn = NearestNeighbour(side)
        for x, y in zip(X, Y):
            noisy = x + 0.1 * rng.standard_normal(D).astype(np.float32)
            side.write(noisy, y, 1.0)
            knn.write(noisy, y)
        out.append((n, recall_fraction(side, X, Y, rng), recall_fraction(knn, X, Y, rng)))
    return out


def gate(seed=0, n=4 * R):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, D)).astype(np.float32)
    Y = rng.standard_normal((n, DV)).astype(np.float32)
    salient = list(range(0, n, 10))
    side = Sidecar(D, d=D, r=R, value_dim=DV, seed=seed)
    knn = NearestNeighbour(side)
    for i, (x, y) in enumerate(zip(X, Y)):
        g = 1.0 if i in salient else 0.1
        side.write(x, y, g)
        knn.write(x, y)
    routine = [i for i in range(n) if i not in salient]
    return (recall_fraction(side, X, Y, rng, salient), recall_fraction(knn, X, Y, rng, salient),
            recall_fraction(side, X, Y, rng, routine), recall_fraction(knn, X, Y, rng, routine))


def speed_and_footprint(writes):
    rng = np.random.default_rng(0)
    mem = Sidecar(D, d=D, r=R, value_dim=D)
    xs = rng.standard_normal((1024, D)).astype(np.float32)
    sal = rng.random(1024).astype(np.float32)
    proc = psutil.Process()
    for i in range(2000):                               # warm up
        mem.step(xs[i % 1024], xs[i % 1024], sal[i % 1024])
    rss0, bytes0 = proc.memory_info().rss, mem.nbytes
    times = []
    t_all = time.perf_counter()
    for i in range(writes):
        t = time.perf_counter()
        mem.step(xs[i % 1024], xs[(i + 1) % 1024], sal[i % 1024])
        if i % 100 == 0:
            times.append(time.perf_counter() - t)
        if i and i % 100_000 == 0:
            print(f'\r  {i:,} writes', end='', flush=True)
    print()
    return {'read_write_us_p50': 1e6 * float(np.median(times)),
            'read_write_us_mean': 1e6 * (time.perf_counter() - t_all) / writes,
            'bytes_before': bytes0, 'bytes_after': mem.nbytes,
            'rss_growth_mb': (proc.memory_info().rss - rss0) / 2**20, 'writes': writes}


def store_rate(n=5000):
    with tempfile.TemporaryDirectory() as tmp:
        store = ExperienceStore(os.path.join(tmp, 'exp.db'), {'vision': 68, 'audio': 18,
                                                              'imu': 14, 'cognition_main': 384})
        f = np.random.default_rng(0).standard_normal(484).astype(np.float32)
        t = time.perf_counter()
        for i in range(n):
            store.insert(Step(0, i * 0.1, f, np.ones(4), np.zeros(4), 1, 1, 0.0, 0.5))
        rate = n / (time.perf_counter() - t)
        mode = store.db.execute('PRAGMA journal_mode').fetchone()[0]
        store.close()
    return rate, mode


def plot(curve, gated, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, data, title in ((axes[0], curve, 'all patterns equally salient'),
                            (axes[1], gated, 'salient events (10%) among routine ones')):
        n, s, k = zip(*data)
        ax.plot(n, s, 'o-', label=f'sidecar (r={R} slots)')
        ax.plot(n, k, 's--', label=f'exact nearest neighbour, {R} pairs')
        ax.axvline(R, color='grey', lw=0.8)
        ax.set_xscale('log', base=2)
        ax.set_xlabel('patterns stored (N)')
        ax.set_title(title)
    axes[0].set_ylabel('recalled from a corrupted key')
    axes[0].legend()
    fig.suptitle('memory capacity at equal memory size')
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--writes', type=int, default=1_000_000)
    args = ap.parse_args()
    curve = capacity([R // 4, R // 2, R, 2 * R, 4 * R, 8 * R])
    at_cap = next(c for c in curve if c[0] == R)
    salient_side, salient_knn, routine_side, routine_knn = gate()
    gated = [(n, *gate(n=n)[:2]) for n in (R // 2, R, 2 * R, 4 * R, 8 * R, 16 * R)]
    speed = speed_and_footprint(args.writes)
    rate, mode = store_rate()
    plot(curve, gated, os.path.join(RESULTS, 'memory_capacity.png'))
    summary = {'read_write_us': round(speed['read_write_us_p50'], 1),
               'footprint_bytes_after_1m_writes': speed['bytes_after'],
               'store_inserts_per_s': round(rate),
               'recall_at_capacity_sidecar': at_cap[1], 'recall_at_capacity_knn': at_cap[2],
               'salient_recall_sidecar': salient_side, 'salient_recall_knn': salient_knn}
    rows = [('measure', 'value'),
            (f'sidecar read+write per step, d={D} r={R}, p50 / mean',
             f"{speed['read_write_us_p50']:.1f} / {speed['read_write_us_mean']:.1f} us "
             f"(goal < 100)"),
            (f"footprint before / after {speed['writes']:,} writes",
             f"{speed['bytes_before']:,} / {speed['bytes_after']:,} bytes "
             f"(process RSS grew {speed['rss_growth_mb']:.1f} MB)"),
            (f'store inserts per s ({mode}, one transaction each)', f'{rate:,.0f}'),
            ('recall at capacity (N = r), sidecar / nearest neighbour',
             f'{at_cap[1]:.2f} / {at_cap[2]:.2f}'),
            ('salient events recalled, 10% salient at N = 4r, sidecar / nn',
             f'{salient_side:.2f} / {salient_knn:.2f}'),
            ('routine events recalled there (room left after salient), sidecar / nn',
             f'{routine_side:.2f} / {routine_knn:.2f}'),
            *[(f'  N = {n}', f'{s:.2f} / {k:.2f}') for n, s, k in curve],
            ('salient events recalled against N (10% salient), sidecar / nn', ''),
            *[(f'  N = {n}', f'{s:.2f} / {k:.2f}') for n, s, k in gated]]
    write('memory', summary, rows, {'capacity_curve': curve, 'salient_curve': gated,
                                    'speed': speed,
                                    'routine_recall_sidecar': routine_side,
                                    'routine_recall_knn': routine_knn,
                                    'store_journal_mode': mode})


if __name__ == '__main__':
    sys.exit(main())
