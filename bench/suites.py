"""Success on every suite for the shipped model and the references, offline and in the graph.

`python bench/suites.py [--skip-graph]` → bench/results/suites.json (+ suites.png):
summary success_{morning,faulty,recall,detour} for the committed coherence model (the
shipped base unless `sage train`/sleep committed another) through the offline pipeline,
success_<suite>_{planner,operator,random} for the references (the planner drives by the
places feature alone: sage_sleep.agent.PlannerPolicy), success_recall_memory_zeroed (the
same model with its places tokens zeroed: what memory is worth), success_<suite>_straight
and success_<suite>_planner_straight (the model and the planner with the places' routes
off, `places_routes: false`: what planning over the grid adds), success_morning_graph
(the morning suite driven through `sage run --processes`, the real graph at real time),
collisions per episode, and the detector's recall and range error on the world's renders.
"""

import argparse
import os
import tempfile

import common  # noqa: F401  (first: ROS on localhost, a run-unique domain)
import numpy as np
import torch
from common import RESULTS, write
from sage_coherence.runtime import install_base, load_runtime
from sage_common.paths import resolve_path
from sage_sensors.detect import Detector
from sage_sim.evaluate import (DETECTION, DETOUR, FAULTY, MORNING, OperatorPolicy,
                               RandomPolicy, RECALL, evaluate, evaluate_detector)
from sage_memory.places import PlacesConfig
from sage_sleep.agent import CoherencePolicy, PLACES, PlannerPolicy
from sage_testing.graph import world_episodes

WORKERS = max(1, min(4, os.cpu_count() or 1))
SUITES = (MORNING, FAULTY, RECALL, DETOUR)


def graph_success(suite, timeout_s: float) -> dict:
    """Drive ``suite`` (random scenes, no faults) through `sage run --processes`."""
    first = suite.seeds[0]
    if list(suite.seeds) != list(range(first, first + len(suite.seeds))):
        raise ValueError('the world node runs consecutive seeds: seed, seed + 1, ...')
    done, wall = world_episodes(
        tempfile.mkdtemp(prefix='sage_suites_'), len(suite.seeds), timeout_s,
        {'seed': first, 'time_limit_s': suite.time_limit_s},
        progress=lambda n, total: print(f'\rgraph {suite.name}: {n}/{total} episodes', end='',
                                        flush=True))
    print()
    wins = [e for e in done if e['success']]
    return {'episodes': len(done), 'success': len(wins) / max(1, len(done)),
            'collisions': float(np.mean([e['collisions'] for e in done])) if done else None,
            'seeds': [e['seed'] for e in done], 'wall_s': round(wall)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--skip-graph', action='store_true', help='offline suites only')
    parser.add_argument('--graph-timeout', type=float, default=1800.0, metavar='S')
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = resolve_path('models')
    install_base(root)
    runtime = load_runtime(root, backend='torch')
    straight = PlacesConfig(routes=False)
    policies = {'model': lambda w: CoherencePolicy(runtime),
                'straight': lambda w: CoherencePolicy(runtime, places=straight),
                'planner': PlannerPolicy,
                'planner_straight': lambda w: PlannerPolicy(places=straight),
                'operator': OperatorPolicy, 'random': lambda w: RandomPolicy(0)}
    summary, table, detail = {}, {}, {'model': runtime.version, 'episodes_per_suite': 30}
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
    zeroed = evaluate(lambda w: CoherencePolicy(runtime, zeroed=(PLACES,)), RECALL,
                      workers=WORKERS)
    summary['success_recall_memory_zeroed'] = round(zeroed.success_rate, 3)
    rows.append(('recall, places zeroed', f'{zeroed.success_rate:.2f}', *[''] * len(policies)))
    det = evaluate_detector(Detector().detect, DETECTION, steps=30)
    summary['detector_recall'] = round(det['recall'], 4)
    summary['detector_range_err_m'] = round(det['range_err_m'], 3)
    rows.append(('detector recall / range error (m)', summary['detector_recall'],
                 summary['detector_range_err_m']))
    if not args.skip_graph:
        g = graph_success(MORNING, args.graph_timeout)
        summary['success_morning_graph'] = round(g['success'], 3)
        detail['graph_morning'] = g
        rows.append(('morning in the graph (sage run --processes)', f'{g["success"]:.2f}',
                     f'{g["episodes"]} episodes in {g["wall_s"]} s'))
    write('suites', summary, rows, detail)
    plot(table)


def plot(table: dict) -> None:
    """Bars: success per suite and policy."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 3.8))
    x, width = np.arange(len(SUITES)), 0.8 / len(table)
    for i, (p, values) in enumerate(table.items()):
        ax.bar(x + (i - (len(table) - 1) / 2) * width, values, width, label=p)
    ax.set_xticks(x, [s.name for s in SUITES])
    ax.set_ylabel('success (30 episodes)')
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncol=3)
    ax.set_title('the coherence model (with places) vs the references; straight: no routes')
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, 'suites.png'), dpi=100)
    print(f'wrote {os.path.join(RESULTS, "suites.png")}')


if __name__ == '__main__':
    main()
