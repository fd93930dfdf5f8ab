"""Success on every suite for the shipped model and the references, with a plot.

`python bench/suites.py` → bench/results/suites.json (+ suites.png): summary
success_{morning,faulty,recall,detour} for the committed coherence model (the shipped
base unless `sage train`/sleep committed another), success_<suite>_{operator,random},
collisions per episode. `recall` (the target in view, then the world turns the robot
away) and `detour` (a wall of pillars across the straight line) need memory: what the
coherence model does not fuse yet (issue 18), which these figures measure.
"""

import os

import numpy as np
import torch
from common import RESULTS, write
from sage_coherence.runtime import install_base, load_runtime
from sage_common.paths import resolve_path
from sage_sim.evaluate import (DETOUR, FAULTY, MORNING, OperatorPolicy, RandomPolicy,
                               RECALL, evaluate)
from sage_sleep.agent import CoherencePolicy

WORKERS = max(1, min(4, os.cpu_count() or 1))
SUITES = (MORNING, FAULTY, RECALL, DETOUR)


def main():
    torch.set_num_threads(1)
    root = resolve_path('models')
    install_base(root)
    runtime = load_runtime(root, backend='torch')
    policies = {'model': lambda w: CoherencePolicy(runtime),
                'operator': OperatorPolicy, 'random': lambda w: RandomPolicy(0)}
    summary, table = {}, {}
    rows = [('suite', *[f'{p} success' for p in policies], 'model collisions/episode')]
    for suite in SUITES:
        reports = {p: evaluate(make, suite, workers=WORKERS) for p, make in policies.items()}
        for p, r in reports.items():
            key = f'success_{suite.name}' + ('' if p == 'model' else f'_{p}')
            summary[key] = round(r.success_rate, 3)
            table.setdefault(p, []).append(r.success_rate)
        summary[f'collisions_{suite.name}'] = round(reports['model'].collisions_per_episode, 1)
        rows.append((suite.name, *[f'{r.success_rate:.2f}' for r in reports.values()],
                     f'{reports["model"].collisions_per_episode:.1f}'))
        print(rows[-1], flush=True)
    write('suites', summary, rows, {'model': runtime.version, 'episodes_per_suite': 30})
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(SUITES))
    for i, (p, values) in enumerate(table.items()):
        ax.bar(x + (i - 1) * 0.27, values, 0.27, label=p)
    ax.set_xticks(x, [s.name for s in SUITES])
    ax.set_ylabel('success (30 episodes)')
    ax.set_ylim(0, 1.05)
    ax.legend()
    ax.set_title(f'coherence model {runtime.version} vs the references')
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, 'suites.png'), dpi=100)
    print(f'wrote {os.path.join(RESULTS, "suites.png")}')


if __name__ == '__main__':
    main()
