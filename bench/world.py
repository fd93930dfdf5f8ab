"""World benchmark: step + render time, and the random and oracle baselines.

    python bench/world.py   ->  bench/results/world.json (summary: step_ms, random_success,
                                oracle_success)
"""

import time

import numpy as np
from common import write
from sage_sim.evaluate import FAULTY, MORNING, OraclePolicy, RandomPolicy, evaluate
from sage_sim.world import ACTIONS, World


def step_ms(n: int = 3000) -> float:
    world, rng = World(seed=0), np.random.default_rng(0)
    world.reset(0)
    times = []
    for _ in range(n):
        if world.done:
            world.reset(int(rng.integers(1 << 30)))
        a = ACTIONS[int(rng.integers(len(ACTIONS)))]
        t = time.perf_counter()
        world.step(a[1], a[2])
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times)), 1e3 * float(np.percentile(times, 99))


def main():
    p50, p99 = step_ms()
    oracle = evaluate(OraclePolicy, MORNING)
    rand = evaluate(lambda w: RandomPolicy(0), MORNING)
    oracle_f = evaluate(OraclePolicy, FAULTY)
    rand_f = evaluate(lambda w: RandomPolicy(0), FAULTY)
    summary = {'step_ms': round(p50, 3), 'random_success': rand.success_rate,
               'oracle_success': oracle.success_rate}
    rows = [('metric', 'value'),
            ('step + render, median ms (160x120)', f'{p50:.3f}'),
            ('step + render, p99 ms', f'{p99:.3f}'),
            (f'oracle success, {MORNING.name} ({len(MORNING.seeds)} ep)',
             f'{oracle.success_rate:.2f}'),
            (f'random success, {MORNING.name}', f'{rand.success_rate:.2f}'),
            (f'oracle success, {FAULTY.name}', f'{oracle_f.success_rate:.2f}'),
            (f'random success, {FAULTY.name}', f'{rand_f.success_rate:.2f}'),
            ('oracle mean time to target, s', f'{oracle.mean_time_s:.1f}')]
    write('world', summary, rows, {'oracle': oracle.__dict__, 'random': rand.__dict__})


if __name__ == '__main__':
    main()
