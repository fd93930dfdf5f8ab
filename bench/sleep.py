"""Sleep benchmark: does one sleep cycle on a day of the robot's own experience help?

    python bench/sleep.py [--seeds 0,1] [--base demonstrations|shipped]
        ->  bench/results/sleep.json, sleep.png
    summary: success_before, success_after, relative_gain, regression_ok, cycle_s_10k,
             peak_rss_mb, encoder_heldout_error_before, encoder_heldout_error_after

For each seed, in a fresh experience store and checkpoint folder:

* ``--base demonstrations`` (the robot's first night): a demonstration day
  (the teacher drives, ``--demo-episodes`` episodes, recorded like any day)
  goes to the store and the morning model is trained on it by behaviour
  cloning; ``--base shipped``: the morning model is the deployed one
  ($SAGE_HOME/models; the shipped base, DAgger-trained, if missing) and the
  store starts empty.
* A day: the morning model drives (``--day-episodes``), the oracle labels,
  every step goes to the store (every 10th with its camera frame).
* One consolidation cycle (sage_sleep.consolidate.run_target with
  CoherenceTarget: salience-weighted selection from the whole store, so
  earlier days are rehearsed), and morning-suite success before and after.
  The candidate is committed only if validation improved and the regression
  (morning) suite did not get worse; "after" is what the robot runs next.
* One cycle of the vision-encoder target on the frames the store holds.

Each finished seed is kept in bench/results/sleep_runs.json (keyed by base and
seed), so seeds can run in separate calls (``--seeds 1`` later adds seed 1);
the summary covers the seeds asked for.
"""

import argparse
import json
import os
import resource
import shutil
import tempfile
import time

import numpy as np
import torch
from common import write
from sage_common.checkpoints import CheckpointStore
from sage_coherence.model import CoherenceConfig, CoherenceModel
from sage_coherence.runtime import install_base
from sage_common.paths import resolve_path
from sage_memory.store import ExperienceStore
from sage_sim.evaluate import Suite
from sage_sleep.consolidate import run_target
from sage_sleep.learn import record_day
from sage_sleep.targets import (CoherenceTarget, demonstration_day, encoder_base,
                                EncoderTarget, VALIDATION)


WORKERS = max(1, min(4, os.cpu_count() or 1))   # evaluation episodes in parallel


def plot(runs, path):
    """Before/after success per sleep cycle (one cycle per seed)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(runs))
    for k, (key, label) in enumerate((('before', 'before'), ('after', 'candidate'))):
        for j, (metric, hatch) in enumerate((('success', ''), ('validation_success', '//'))):
            ax.bar(x + (2 * k + j) * 0.2 - 0.3, [r[key][metric] for r in runs], 0.2,
                   hatch=hatch, color=('tab:grey', 'tab:green')[k],
                   label=f'{label}: {"morning" if metric == "success" else "validation"}')
    ax.set_xticks(x, [f"seed {r['seed']}\n{'kept' if r['committed'] else 'rolled back'}"
                      for r in runs])
    ax.set_ylabel('closed-loop success')
    ax.set_title('one sleep cycle on a day of own experience')
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


RUNS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results', 'sleep_runs.json')


def deployed():
    root = resolve_path('models')
    store = CheckpointStore(root, 'coherence')
    install_base(root)
    return store.open(), store


def morning_model(args, seed, store, cfg, base, base_store):
    """Return (model, what it is) the robot starts the day with."""
    model = CoherenceModel(cfg)
    if args.base == 'shipped':
        model.load_state_dict(base_store.load_state(base))
        return model, 'shipped base'
    model, day = demonstration_day(cfg, range(1000 * seed, 1000 * seed + args.demo_episodes),
                                   store, updates=args.base_updates, seed=seed,
                                   workers=args.workers, device=args.device)
    return model, f'behaviour cloning on {day["demonstrations"]} demonstrations'


def run_seed(args, seed, cfg, base, base_store):
    work = tempfile.mkdtemp(prefix='sage_sleep_bench_')
    try:
        store = ExperienceStore(os.path.join(work, 'experiences.db'), cfg.modalities)
        t0 = time.monotonic()
        model, what = morning_model(args, seed, store, cfg, base, base_store)
        ckpts = CheckpointStore(work, 'coherence')
        ckpts.commit(model.state_dict(), {'config': cfg.to_dict()})
        base_s = time.monotonic() - t0
        day_seeds = range(50_000 + 1000 * seed, 50_000 + 1000 * seed + args.day_episodes)
        day = record_day(model, day_seeds, store, workers=args.workers)
        target = CoherenceTarget(store, cfg, seed=seed, workers=args.workers,
                                 device=args.device, validation=Suite(
                                     'validation', VALIDATION.seeds[:args.validation]))
        t0 = time.monotonic()
        result = run_target(target, ckpts, {'train_s': args.train_s, 'max_experiences': 20_000},
                            lambda p, f, m: print(f'\r  seed {seed}: {p:9s} {f:4.0%} {m[:60]:60s}',
                                                  end='', flush=True), lambda: False)
        cycle_s = time.monotonic() - t0
        print()
        enc_ckpts = CheckpointStore(work, 'vision_encoder')
        encoder_base(enc_ckpts)
        t0 = time.monotonic()
        enc = run_target(EncoderTarget(store, seed=seed), enc_ckpts,
                         {'train_s': 60.0, 'max_experiences': 10_000}, lambda *a: None,
                         lambda: False)
        return {'seed': seed, 'base': args.base, 'morning_model': what, 'base_s': base_s,
                'day': day, 'committed': result.committed, 'message': result.message,
                'before': result.before, 'after': result.after, 'cycle_s': cycle_s,
                'steps': store.count(), 'frames': store.frame_count(),
                'train_s': args.train_s, 'device': args.device, 'workers': args.workers,
                'encoder': {'committed': enc.committed, 'message': enc.message,
                            'before': enc.before, 'after': enc.after,
                            'cycle_s': time.monotonic() - t0}}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--seeds', default='0,1', help='comma-separated seeds')
    ap.add_argument('--base', choices=('demonstrations', 'shipped'), default='demonstrations')
    ap.add_argument('--demo-episodes', type=int, default=60)
    ap.add_argument('--base-updates', type=int, default=300)
    ap.add_argument('--day-episodes', type=int, default=40)
    ap.add_argument('--validation', type=int, default=40, help='validation episodes')
    ap.add_argument('--train-s', type=float, default=240.0)
    ap.add_argument('--workers', type=int, default=WORKERS, help='rollout processes')
    ap.add_argument('--device', default='cpu', help='where training runs (cpu, cuda)')
    ap.add_argument('--fresh', action='store_true', help='rerun seeds already in sleep_runs')
    args = ap.parse_args()
    torch.set_num_threads(1)
    base, base_store = deployed()
    cfg = CoherenceConfig.from_dict(base.meta['config'])
    kept = json.load(open(RUNS)) if os.path.exists(RUNS) else {}
    runs = []
    for seed in (int(x) for x in args.seeds.split(',')):
        key = f'{args.base}/{seed}'
        if args.fresh or key not in kept:
            kept[key] = run_seed(args, seed, cfg, base, base_store)
            with open(RUNS + '.tmp', 'w') as f:
                json.dump(kept, f, indent=1, default=float)
            os.replace(RUNS + '.tmp', RUNS)
        runs.append(kept[key])
    before = float(np.mean([r['before']['success'] for r in runs]))
    # what the robot runs the next morning: the candidate if committed, else the old model
    next_morning = [r['after']['success'] if r['committed'] else r['before']['success']
                    for r in runs]
    after = float(np.mean(next_morning))
    regression_ok = all(k >= r['before']['success'] for k, r in zip(next_morning, runs))
    per_10k = float(np.mean([r['cycle_s'] * 10_000 / max(1, r['steps']) for r in runs]))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = {'success_before': round(before, 3), 'success_after': round(after, 3),
               'relative_gain': round((after - before) / max(before, 1e-9), 3),
               'regression_ok': regression_ok, 'cycle_s_10k': round(per_10k, 1),
               'peak_rss_mb': round(rss, 1),
               'encoder_heldout_error_before': round(float(np.mean(
                   [r['encoder']['before']['heldout_error'] for r in runs])), 5),
               'encoder_heldout_error_after': round(float(np.mean(
                   [r['encoder']['after']['heldout_error'] for r in runs])), 5)}
    rows = [('seed', 'morning model', 'own day steps / in store', 'day success',
             'morning before', 'candidate', 'validation before/candidate', 'committed',
             'cycle s')]
    for r in runs:
        rows.append((r['seed'], r['morning_model'], f"{r['day']['steps']}/{r['steps']}",
                     f"{r['day']['success']:.2f}",
                     f"{r['before']['success']:.2f}", f"{r['after']['success']:.2f}",
                     f"{r['before']['validation_success']:.2f}/"
                     f"{r['after']['validation_success']:.2f}",
                     r['committed'], f"{r['cycle_s']:.0f}"))
    rows.append(('mean', '', '', '', f'{before:.3f}', f'next morning {after:.3f}', '', '',
                 ''))
    rows.append(('vision encoder', 'frames', 'held-out error before', 'after',
                 'regression error before', 'after', 'committed', 'cycle s'))
    for r in runs:
        e = r['encoder']
        rows.append((r['seed'], r['frames'], f"{e['before']['heldout_error']:.5f}",
                     f"{e['after']['heldout_error']:.5f}",
                     f"{e['before']['regression_error']:.5f}",
                     f"{e['after']['regression_error']:.5f}", e['committed'],
                     f"{e['cycle_s']:.0f}"))
    write('sleep', summary, rows, {'base': args.base, 'runs': runs})
    plot(runs, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results', 'sleep.png'))


if __name__ == '__main__':
    main()
