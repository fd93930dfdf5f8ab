"""Sleep benchmark: does one sleep cycle on a day of the robot's own experience help?

    python bench/sleep.py [--seeds 3]  ->  bench/results/sleep.json
    summary: success_before, success_after, relative_gain, regression_ok, cycle_s_10k,
             peak_rss_mb, encoder_heldout_error_before, encoder_heldout_error_after

For each seed: start from the deployed coherence model ($SAGE_HOME/models, trained
the shipped base if missing), live a day in the world (the model acts,
the oracle labels, every step goes to a fresh experience store), run one
consolidation cycle (sage_sleep.consolidate.run_target with CoherenceTarget), and
measure morning-suite success before and after. The committed model is used
only if validation improved and the regression (morning) suite did not get worse.
Then one cycle of the vision-encoder target on the frames the day stored
(reconstruction error on held-out frames and on the world's regression frames).
"""

import argparse
import os
import resource
import shutil
import tempfile
import time

import numpy as np
import torch
from common import write
from sage_core.checkpoints import CheckpointStore
from sage_core.coherence.model import CoherenceConfig, CoherenceModel
from sage_core.coherence.runtime import install_base
from sage_core.ros_common import resolve_path
from sage_memory.store import ExperienceStore
from sage_sleep.consolidate import run_target
from sage_sleep.learn import record_day
from sage_sleep.targets import CoherenceTarget, encoder_base, EncoderTarget


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


def deployed():
    root = resolve_path('models')
    store = CheckpointStore(root, 'coherence')
    install_base(root)
    return store.open(), store


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--seeds', type=int, default=3)
    ap.add_argument('--day-episodes', type=int, default=60)
    ap.add_argument('--train-s', type=float, default=240.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    base, base_store = deployed()
    cfg = CoherenceConfig.from_dict(base.meta['config'])
    runs = []
    for seed in range(args.seeds):
        work = tempfile.mkdtemp(prefix='sage_sleep_bench_')
        ckpts = CheckpointStore(work, 'coherence')
        ckpts.commit(base_store.load_state(base), {'config': base.meta['config']})
        store = ExperienceStore(os.path.join(work, 'experiences.db'), cfg.modalities)
        model = CoherenceModel(cfg)
        model.load_state_dict(base_store.load_state(base))
        day_seeds = range(50_000 + 1000 * seed, 50_000 + 1000 * seed + args.day_episodes)
        day = record_day(model, day_seeds, store)
        target = CoherenceTarget(store, cfg, seed=seed, workers=WORKERS)
        t0 = time.monotonic()
        result = run_target(target, ckpts, {'train_s': args.train_s, 'max_experiences': 10_000},
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
        runs.append({'seed': seed, 'day': day, 'committed': result.committed,
                     'message': result.message, 'before': result.before,
                     'after': result.after, 'cycle_s': cycle_s, 'steps': store.count(),
                     'frames': store.frame_count(), 'encoder': {
                         'committed': enc.committed, 'message': enc.message,
                         'before': enc.before, 'after': enc.after,
                         'cycle_s': time.monotonic() - t0}})
        shutil.rmtree(work, ignore_errors=True)
    before = float(np.mean([r['before']['success'] for r in runs]))
    # what the robot runs the next morning: the candidate if committed, else the old model
    kept = [r['after']['success'] if r['committed'] else r['before']['success'] for r in runs]
    after = float(np.mean(kept))
    regression_ok = all(k >= r['before']['success'] for k, r in zip(kept, runs))
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
    rows = [('seed', 'day steps', 'day success', 'morning before', 'morning after',
             'validation before/after', 'committed', 'cycle s')]
    for r in runs:
        rows.append((r['seed'], r['steps'], f"{r['day']['success']:.2f}",
                     f"{r['before']['success']:.2f}", f"{r['after']['success']:.2f}",
                     f"{r['before']['validation_success']:.2f}/"
                     f"{r['after']['validation_success']:.2f}",
                     r['committed'], f"{r['cycle_s']:.0f}"))
    rows.append(('mean', '', '', f'{before:.3f}', f'{after:.3f}', '', '', ''))
    rows.append(('vision encoder', 'frames', 'held-out error before', 'after',
                 'regression error before', 'after', 'committed', 'cycle s'))
    for r in runs:
        e = r['encoder']
        rows.append((r['seed'], r['frames'], f"{e['before']['heldout_error']:.5f}",
                     f"{e['after']['heldout_error']:.5f}",
                     f"{e['before']['regression_error']:.5f}",
                     f"{e['after']['regression_error']:.5f}", e['committed'],
                     f"{e['cycle_s']:.0f}"))
    write('sleep', summary, rows, {'runs': runs})
    plot(runs, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results', 'sleep.png'))


if __name__ == '__main__':
    main()
