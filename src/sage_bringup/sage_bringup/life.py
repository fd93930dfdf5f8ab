"""`sage life`: days and nights of the real graph, and whether the nights make SAGE better.

A robot that only watched one demonstration day (the teacher drove; its model learned
that day by behaviour cloning) lives ``days`` days in `sage run --processes` with the
default params: each day it drives the morning suite (the same seeds every day: the
measure) and a day of work on new seeds, with the teacher only labelling
(sage/teacher_action); after each day the world's clock jumps to the night and the sleep
node consolidates through its own night trigger; the coherence node takes what it
commits. Writes a JSON report and a plot of morning success and teacher agreement by day,
with what each night committed or rolled back and why.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from sage_bringup.life_node import WORK_SEED

DEMO_OFFSET = 1_000_000     # demonstration episodes' ids in the store, clear of the graph's


def add_args(p) -> None:
    """Arguments of `sage life`."""
    p.add_argument('--days', type=int, default=5, help='days to live (nights: days - 1)')
    p.add_argument('--morning', type=int, default=10, help='morning-suite episodes a day')
    p.add_argument('--work', type=int, default=10, help='work episodes a day')
    p.add_argument('--demo-episodes', type=int, default=40,
                   help='episodes of the demonstration day the robot starts from')
    p.add_argument('--demo-train-s', type=float, default=300.0,
                   help='wall seconds of behaviour cloning on the demonstration day')
    p.add_argument('--teacher', choices=('planner', 'operator', 'oracle'), default='planner',
                   help='who labels (and drove the demonstrations): the planner reads only '
                   "the robot's own features (the teacher node); the operator and the oracle "
                   'are the world\'s and know more than any feature carries')
    p.add_argument('--targets', nargs='+', default=['coherence'],
                   help='what the nights improve (sleep node targets)')
    p.add_argument('--train-s', type=float, default=240.0,
                   help='wall seconds a night gives each target, scoring included')
    p.add_argument('--validation', type=int, default=10, help='validation episodes a night')
    p.add_argument('--home', default='', help='$SAGE_HOME of the run (default: a new one)')
    p.add_argument('--out', default=os.path.join('bench', 'results', 'life.json'),
                   help='the report (a .png plot beside it)')


def start_home(args, home: str, memory: dict) -> dict:
    """Make ``home``: the shipped models, the demonstration day and the model it gave.

    The store is laid out as the memory node's ``memory`` params say.
    """
    from sage_coherence.model import CoherenceConfig
    from sage_coherence.runtime import install_base
    from sage_common.checkpoints import CheckpointStore
    from sage_memory.memory import shared_spans
    from sage_memory.store import ExperienceStore
    from sage_sleep.targets import demonstration_day
    models = os.path.join(home, 'models')
    install_base(models)
    ckpts = CheckpointStore(models, 'coherence')
    shipped = ckpts.open()
    cfg = CoherenceConfig.from_dict(shipped.meta['config'])
    layout = dict(zip(memory['modalities'], memory['dims']))
    store = ExperienceStore(os.path.join(home, memory['store_path']), layout,
                            shared=shared_spans(layout))
    print(f'demonstration day: the {args.teacher} drives {args.demo_episodes} episodes; '
          f'a new model learns them for {args.demo_train_s:.0f} s', flush=True)
    t0 = time.monotonic()
    model, day = demonstration_day(cfg, range(args.demo_episodes), store, args.teacher,
                                   episode_offset=DEMO_OFFSET, workers=os.cpu_count() or 1,
                                   time_budget_s=args.demo_train_s)
    day['wall_s'] = round(time.monotonic() - t0)
    store.close()
    ckpt = ckpts.commit(model.state_dict(), {'config': cfg.to_dict(),
                                             'trained_by': 'sage life: demonstration day'})
    return dict(day, version=ckpt.version)


def params_file(args, home: str) -> tuple[str, dict]:
    """Write the default params with the days of this life; return the path and params."""
    import yaml
    from sage_bringup.graph import default_params_file
    params = yaml.safe_load(open(default_params_file()))
    per_day = args.morning + args.work
    planner = args.teacher == 'planner'
    if planner:
        params.setdefault('teacher', {'ros__parameters': {}})
    else:
        params.pop('teacher', None)         # the world labels
    params['world']['ros__parameters'].update(
        seed=WORK_SEED, teacher='none' if planner else args.teacher, day_episodes=per_day,
        morning_episodes=args.morning, episodes=args.days * per_day,
        metrics_file=os.path.join(home, 'episodes.jsonl'))
    params['sleep']['ros__parameters'].update(
        targets=args.targets, train_s=args.train_s, validation_episodes=args.validation,
        regression_episodes=args.morning)
    path = os.path.join(home, 'params.yaml')
    with open(path, 'w') as f:
        yaml.safe_dump(params, f)
    return path, params


def teacher_success(args) -> dict:
    """Return the morning-suite success of the operator and of the teacher that labels.

    The operator's is the goal's reference. Offline: the same steps, no graph needed.
    """
    from sage_sim.evaluate import MORNING, OperatorPolicy, Suite, evaluate
    from sage_sleep.agent import PlannerPolicy
    suite = Suite(MORNING.name, MORNING.seeds[:args.morning])
    operator = evaluate(lambda world: OperatorPolicy(world), suite).success_rate
    labeller = {'operator': operator, 'oracle': 1.0,       # the oracle knows the map
                'planner': None}[args.teacher]
    if labeller is None:
        labeller = evaluate(PlannerPolicy, suite).success_rate
    return {'operator': operator, 'labeller': labeller}


def summarize(args, start: dict, episodes, nights, agreement, teachers: dict) -> dict:
    """Return the report: summary figures, per day and per night."""
    by_day = []
    for day in range(args.days):
        morning = [e['success'] for e in episodes if e.get('day') == day
                   and e.get('phase') == 'morning']
        work = [e['success'] for e in episodes if e.get('day') == day and e.get('phase') == 'work']
        by_day.append({'day': day + 1, 'morning_success': sum(morning) / max(1, len(morning)),
                       'work_success': sum(work) / max(1, len(work)),
                       'teacher_agreement': round(agreement.get(day, 0.0), 3)})
    success = [d['morning_success'] for d in by_day]
    committed = [n['targets'].get('coherence', {}).get('committed', False) for n in nights]
    # a committed night after which the morning suite in the graph did worse
    regressions = sum(1 for k, c in enumerate(committed)
                      if c and k + 1 < len(success) and success[k + 1] < success[k])
    overrun = [t['elapsed_s'] / t['budget_s'] - 1 for n in nights
               for t in n['targets'].values() if t['budget_s']]
    teacher = teachers['operator']
    finished = sum(1 for n in nights if n.get('phase') == 'done')
    summary = {'days': args.days, 'success_by_day': success, 'teacher_success': teacher,
               'labeller': args.teacher, 'labeller_success': teachers['labeller'],
               'nights_committed': sum(committed),
               'nights_rolled_back': finished - sum(committed),
               'nights_failed': len(nights) - finished,     # yielded or failed: no verdict
               'regressions': regressions,
               'max_budget_overrun': round(max(overrun), 3) if overrun else None,
               'final_vs_teacher': round(success[-1] / teacher, 3) if teacher else None}
    return {'summary': summary, 'by_day': by_day, 'nights': nights, 'start': start,
            'args': {k: v for k, v in vars(args).items() if k != 'func'}}


def plot(report: dict, path: str) -> None:
    """Morning success and teacher agreement by day; each night's outcome between days."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    days = [d['day'] for d in report['by_day']]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(days, [d['morning_success'] for d in report['by_day']], 'o-',
            label='morning success (graph)')
    ax.plot(days, [d['teacher_agreement'] for d in report['by_day']], 's--',
            label='agreement with the teacher (day)')
    ax.axhline(report['summary']['teacher_success'], color='grey', ls=':',
               label='operator teacher success')
    if report['summary']['labeller'] != 'operator':
        ax.axhline(report['summary']['labeller_success'], color='tab:purple', ls=':',
                   label=f'{report["summary"]["labeller"]} (labels) success')
    for k, night in enumerate(report['nights']):
        kept = night['targets'].get('coherence', {}).get('committed', False)
        ax.annotate('kept' if kept else 'rolled back', (k + 1.5, 0.02), ha='center',
                    fontsize=8, color='tab:green' if kept else 'tab:red')
    ax.set_xlabel('day')
    ax.set_ylim(0, 1.05)
    ax.set_xticks(days)
    ax.set_title('sage life: days in the graph, nights of sleep')
    ax.legend(fontsize=8, loc='upper left')
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def cmd_life(args) -> int:
    """Run `sage life` (see the module doc)."""
    if args.days < 1 or args.morning < 1 or args.work < 0:
        print('sage: life needs --days >= 1 and --morning >= 1', file=sys.stderr)
        return 2
    home = os.path.abspath(args.home or tempfile.mkdtemp(prefix='sage_life_'))
    os.makedirs(home, exist_ok=True)
    if os.path.exists(os.path.join(home, 'models')):
        print(f'sage: {home} already holds models; give a new --home', file=sys.stderr)
        return 2
    print(f'life in {home} (graph log: {home}/graph.log)', flush=True)
    t0 = time.monotonic()
    path, params = params_file(args, home)
    start = start_home(args, home, params['memory']['ros__parameters'])
    teachers = teacher_success(args)
    from sage_bringup.life_node import live
    episodes, nights, agreement = live(args, home, path)
    report = summarize(args, start, episodes, nights, agreement, teachers)
    report['wall_s'] = round(time.monotonic() - t0)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=1)
    plot(report, os.path.splitext(args.out)[0] + '.png')
    s = report['summary']
    print(f'morning success by day {s["success_by_day"]} (operator '
          f'{s["teacher_success"]:.2f}, {args.teacher} {s["labeller_success"]:.2f}); nights '
          f'committed {s["nights_committed"]}, rolled back {s["nights_rolled_back"]}, '
          f'regressions {s["regressions"]}; wrote {args.out}')
    return 0
