"""Language that reaches the wheels: plans from embedded models on held-out instructions.

`python bench/language.py` → bench/results/language.json (+ language.png). On the
`language` suite (30 episodes, each a held-out instruction of sage_sim.language: colour
knowledge, relations, sequences, exclusion, return), the shipped coherence model drives
with the cognition feature made by each planner, through the same step the cognition
node runs (sage_cognition.plan.PlanSensing in sage_sleep.agent.SensePipeline):

  embedding   no model: the instruction's sentence embedding (backend none, today)
  smollm2     SmolLM2-135M-Instruct, plans under constrained decoding (xgrammar)
  gemma3      Gemma 3 270M (base, Q4_K_M), the same
  *_free      the same models without the constraint (their first line parsed)
  expected    the plan that means the instruction (sage_sim.language): the ceiling of
              what plan following gives this coherence model

Plans are made once per instruction on one CPU thread (greedy decoding: the same words
give the same plan; the episodes reuse it). Summary: success_language_<planner>,
plan_accuracy_<planner> (the plan's steps, resolved on the true layout, reach what the
instruction asks), parse_rate_<planner>, plan_latency_p50_s / _p90_s of the best, and
success_morning with the best planner. Then the default graph (`sage run --processes`,
config/sage.yaml, the world at 30 Hz): first_plan_s_in_graph (start -> the first valid
plan on sage/cognition/main/plan) and loop_latency_p99_ms_thinking (camera frame ->
decision, for frames heard while the model was generating a plan: the latency_s before
each freshly generated plan was heard). `--graph-only` runs just that part.
"""

import json
import os
import sys
import time

import common  # noqa: F401  (first: ROS on localhost, a run-unique domain)
import numpy as np
import torch
from common import RESULTS, write
from sage_coherence.runtime import install_base, load_runtime
from sage_cognition.backends import LocalBackend
from sage_cognition.plan import LABELS, KnownPlanner, Planner
from sage_common.paths import resolve_path
from sage_sim.evaluate import LANGUAGE, MORNING, evaluate, language_task
from sage_sim.language import nearest_to
from sage_sim.world import START, World
from sage_sleep.agent import CoherencePolicy

WORKERS = max(1, min(4, os.cpu_count() or 1))


def layouts():
    """Each language episode: (its task, the objects of its layout)."""
    world, out = World(LANGUAGE.config()), []
    for seed in LANGUAGE.seeds:
        world.reset(seed)
        out.append((language_task(world, seed), list(world.objects)))
    return out


def reaches(steps, goals, objects) -> bool:
    """Whether the plan's steps, resolved on the true layout, reach the goals in order."""
    if steps is None or len(steps) != len(goals):
        return False
    for step, goal in zip(steps, goals):
        if step.do == 'go_to':
            where = {step.to}
        elif step.do == 'go_near':
            where = {nearest_to(objects, step.to)}
        elif step.do == 'go_except':
            where = set(LABELS) - {step.to}
        elif step.do == 'return':
            where = {START}
        else:
            return False
        if not where <= set(goal):
            return False
    return True


def in_graph(seconds: float = 120.0) -> dict:
    """First plan and loop latency while planning, in the default graph (see the doc)."""
    from coherence import loop_latency
    from sage_ros.common import qos_from_name
    from std_msgs.msg import String
    plans, instructions = [], []

    def listen(node, started):
        node.create_subscription(String, 'sage/cognition/main/plan', lambda m: plans.append(
            (time.monotonic(), json.loads(m.data))), qos_from_name('LATCHED'))
        node.create_subscription(String, 'sage/instruction', lambda m: instructions.append(
            time.monotonic()), qos_from_name('LATCHED'))
    loop = loop_latency(seconds, listen=listen)
    first = next((t - loop['started'] for t, p in plans if p['valid']), None)
    # where the first plan's wait went: the graph starting, then the model planning
    first_instruction = instructions[0] - loop['started'] if instructions else None
    # a plan generated (not cached) was being made for its latency_s before it was heard
    windows = [(t - p['latency_s'], t) for t, p in plans
               if p.get('event') == 'planned' and not p.get('cached') and p['valid']]
    thinking = [ms for heard, ms in loop['samples'] if any(a <= heard <= b for a, b in windows)]
    made = [p['latency_s'] for _, p in plans if p.get('event') == 'planned' and
            not p.get('cached') and p['valid']]
    return {'first_plan_s': first, 'first_instruction_s': first_instruction,
            'loop_p50_ms': loop['p50'], 'loop_p99_ms': loop['p99'],
            'plan_latency_p50_s': float(np.median(made)) if made else None,
            'thinking_frames': len(thinking),
            'thinking_p99_ms': float(np.percentile(thinking, 99)) if thinking else None,
            'thinking_s': sum(b - a for a, b in windows),
            'plans': [p for _, p in plans], 'frames_decided': loop['frames_decided']}


def graph_rows(summary: dict, rows: list, detail: dict) -> None:
    """Add the in-graph figures to the summary and the table."""
    g = in_graph()
    detail['graph'] = g
    summary['first_plan_s_in_graph'] = None if g['first_plan_s'] is None else round(
        g['first_plan_s'], 1)
    summary['loop_latency_p99_ms_thinking'] = None if g['thinking_p99_ms'] is None else round(
        g['thinking_p99_ms'], 1)
    summary['loop_latency_p99_ms_graph'] = round(g['loop_p99_ms'], 1)
    summary['plan_latency_p50_s_in_graph'] = None if g['plan_latency_p50_s'] is None else \
        round(g['plan_latency_p50_s'], 2)
    heard = g['first_instruction_s']
    rows.append(('default graph: first plan after start, s', summary['first_plan_s_in_graph']))
    rows.append(('  the first instruction heard after start, s',
                 None if heard is None else round(heard, 1)))
    rows.append(('  loop p99 ms while a plan is generated / all',
                 f'{summary["loop_latency_p99_ms_thinking"]} / {g["loop_p99_ms"]:.1f} '
                 f'({g["thinking_frames"]} frames in {g["thinking_s"]:.0f} s of thinking)'))
    rows.append(('  plan latency p50 in the graph (niced, the world at 30 Hz), s',
                 summary['plan_latency_p50_s_in_graph']))


def main():
    if '--graph-only' in sys.argv[1:]:
        summary, rows, detail = {}, [('measure', 'value')], {}
        graph_rows(summary, rows, detail)
        old = os.path.join(RESULTS, 'language.json')
        if os.path.exists(old):                 # keep the offline figures of the last run
            with open(old) as f:
                kept = json.load(f)
            summary = {**kept['summary'], **summary}
            detail = {**kept['detail'], **detail}
            rows = [tuple(r) for r in kept['rows'] if not r[0].startswith(
                ('default graph', '  the first instruction', '  loop p99',
                 '  plan latency'))] + rows[1:]
        write('language', summary, rows, detail)
        return
    torch.set_num_threads(1)
    root = resolve_path('models')
    install_base(root)
    runtime = load_runtime(root, backend='torch')
    episodes = layouts()
    expected = {t.text: t.plan for t, _ in episodes}
    planners, detail = {'embedding': None, 'expected': KnownPlanner(expected)}, {}
    for model in ('smollm2', 'gemma3'):
        backend = LocalBackend(threads=1, model=model)
        t0 = time.monotonic()
        backend.load()
        load_s = time.monotonic() - t0
        for constrained in (True, False):
            name = model if constrained else f'{model}_free'
            planner = Planner(backend, constrained=constrained)
            results = []
            for i, (t, objects) in enumerate(episodes):
                r = planner.plan(t.text)
                results.append((r, reaches(r.steps, t.goals, objects)))
                print(f'\r{name}: planned {i + 1}/{len(episodes)}', end='', flush=True)
            print()
            latency = [r.latency_s for r, _ in results]
            detail[name] = {
                'load_s': round(load_s, 1),
                'parse_rate': float(np.mean([r.steps is not None for r, _ in results])),
                'plan_accuracy': float(np.mean([ok for _, ok in results])),
                'latency_p50_s': float(np.median(latency)),
                'latency_p90_s': float(np.percentile(latency, 90)),
                'plans': [{'instruction': t.text, 'plan': r.text, 'reaches': ok,
                           'error': r.error} for (t, _), (r, ok) in zip(episodes, results)]}
            planners[name] = planner
        backend._model = None            # free the memory before the next model
    summary, rows = {}, [('planner', 'success', 'plan accuracy', 'parse rate',
                          'latency p50 / p90 s')]
    for name, planner in planners.items():
        report = evaluate(lambda w, p=planner: policy(runtime, p), LANGUAGE, workers=WORKERS)
        summary[f'success_language_{name}'] = round(report.success_rate, 3)
        d = detail.setdefault(name, {})
        d['episodes'] = report.episodes
        if name in ('embedding', 'expected'):
            rows.append((name, f'{report.success_rate:.2f}', '', '', ''))
        else:
            summary[f'plan_accuracy_{name}'] = round(d['plan_accuracy'], 3)
            summary[f'parse_rate_{name}'] = round(d['parse_rate'], 3)
            rows.append((name, f'{report.success_rate:.2f}', f'{d["plan_accuracy"]:.2f}',
                         f'{d["parse_rate"]:.2f}',
                         f'{d["latency_p50_s"]:.2f} / {d["latency_p90_s"]:.2f}'))
        print(rows[-1], flush=True)
    models = [n for n in planners if n in ('smollm2', 'gemma3')]
    best = max(models, key=lambda n: (summary[f'success_language_{n}'],
                                      summary[f'plan_accuracy_{n}']))
    summary.update(best_model=best, plan_accuracy_best=summary[f'plan_accuracy_{best}'],
                   parse_rate=summary[f'parse_rate_{best}'],
                   plan_latency_p50_s=round(detail[best]['latency_p50_s'], 2),
                   plan_latency_p90_s=round(detail[best]['latency_p90_s'], 2))
    morning = evaluate(lambda w: policy(runtime, planners[best]), MORNING, workers=WORKERS)
    summary['success_morning'] = round(morning.success_rate, 3)
    rows.append((f'morning with {best}', f'{morning.success_rate:.2f}'))
    graph_rows(summary, rows, detail)
    write('language', summary, rows, detail)
    plot(summary, [n for n in planners])


def policy(runtime, planner):
    """Return the shipped model driving with ``planner``'s plan feature."""
    return CoherencePolicy(runtime, planner=planner)


def plot(summary: dict, names: list) -> None:
    """Bars: success on the held-out language suite per planner."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 3.5))
    values = [summary[f'success_language_{n}'] for n in names]
    accuracy = [summary.get(f'plan_accuracy_{n}', np.nan) for n in names]
    x = np.arange(len(names))
    ax.bar(x - 0.2, values, 0.4, label='success (30 episodes)')
    ax.bar(x + 0.2, accuracy, 0.4, label='plan accuracy')
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title('held-out instructions: who makes the plan the coherence model follows')
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, 'language.png'), dpi=100)
    print(f'wrote {os.path.join(RESULTS, "language.png")}')


if __name__ == '__main__':
    main()
