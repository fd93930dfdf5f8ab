"""One sleep cycle: select, augment, train, validate, and commit only an improvement.

ROS-free. Each model that sleep improves is a ``Target`` (coherence model,
vision encoder, LoRA adapter). The cycle never touches the model in use until
a candidate has beaten it on held-out data and the regression set; then the
candidate is committed as a new checkpoint version (atomic, see
sage_common.checkpoints) and announced. Anything else is a rollback with a
reason. ``should_stop`` is polled often, so a sleep yields at once when the
robot becomes active again.

The budget (``budget['train_s']``) is wall time for the whole cycle, validation
included: the model in use is scored first, which times one evaluation; the
candidate trains for what is left less one more evaluation (with a margin), and a
cycle that still ran more than 10 % past its budget is rolled back.

``run_cycle_in_child`` runs a night's targets in a fresh process: what a night allocates
(episodes, training windows, models: 1-1.4 GB) leaves with it, so a node that lives for
months stays the size it started at, and a night the kernel kills for memory is a
rolled-back night, not a dead node.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from sage_common.checkpoints import Checkpoint, CheckpointStore

# share of a target's progress bar spent in each step ('score': validating the model in use)
_SPAN = {'select': (0.0, 0.05), 'augment': (0.05, 0.1), 'score': (0.1, 0.3),
         'train': (0.3, 0.75), 'validate': (0.75, 0.97), 'commit': (0.97, 1.0)}
EVALUATION_MARGIN = 1.5      # a candidate's scoring may take longer (a worse model's episodes
#                              run to their time limit)
OVERRUN = 0.1                # a cycle that took 10 % more than its budget commits nothing
MIN_TRAIN_S = 1.0


class Cancelled(Exception):
    """The sleep was asked to stop (robot active, action cancelled, node deactivated)."""


class CycleFailed(Exception):
    """A target's cycle raised, or the cycle's process died; nothing was committed."""


@dataclass
class Evaluation:
    """Metrics of one model state. ``score`` decides; ``regression`` must not get worse."""

    score: float
    regression: float
    metrics: dict[str, float] = field(default_factory=dict)
    note: str = ''       # why the regression value is what it is (e.g. a guard it broke)


class Target(Protocol):
    """A model that sleep can improve."""

    name: str            # checkpoint model name: 'coherence', 'vision_encoder', 'lora'
    min_gain: float      # score gain needed to commit

    def select(self, budget: dict) -> Any:
        """Pick the experiences to learn from (salience-weighted), or None if too few."""

    def augment(self, data: Any) -> Any:
        """Return training data with augmentations added."""

    def train(self, state: dict, data: Any, budget_s: float,
              progress: Callable[[float], None]) -> dict:
        """Return a new state trained from ``state`` (a copy; never edit in place)."""

    def evaluate(self, state: dict, data: Any) -> Evaluation:
        """Score a state on held-out data and the regression set."""


@dataclass
class CycleResult:
    """What one cycle did for one target."""

    target: str
    committed: bool
    message: str
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    checkpoint: Checkpoint | None = None
    elapsed_s: float = 0.0          # wall time the cycle took
    budget_s: float = 0.0           # wall time it was given


def run_target(target: Target, store: CheckpointStore, budget: dict,
               report: Callable[[str, float, str], None],
               should_stop: Callable[[], bool]) -> CycleResult:
    """Run one consolidation cycle for one target; see the module doc."""
    def phase(name: str, frac: float = 0.0, message: str = '') -> None:
        if should_stop():
            raise Cancelled(f'stopped during {name}')
        lo, hi = _SPAN[name]
        report('validate' if name == 'score' else name, lo + (hi - lo) * frac, message)

    start = time.monotonic()
    budget_s = float(budget.get('train_s', 60.0))

    def result(committed, message, before=None, after=None, ckpt=None) -> CycleResult:
        report('commit', 1.0, f'{target.name}: {message}')
        return CycleResult(target.name, committed, message,
                           _metrics(before) if before else {}, _metrics(after) if after else {},
                           ckpt, time.monotonic() - start, budget_s)

    current = store.open()              # verified; raises CheckpointError if corrupted
    state = store.load_state(current)
    phase('select', 0.0, f'selecting experiences for {target.name}')
    data = target.select(budget)
    if data is None:
        return CycleResult(target.name, False, 'not enough experiences to learn from',
                           checkpoint=current, elapsed_s=time.monotonic() - start,
                           budget_s=budget_s)
    phase('augment')
    data = target.augment(data)
    phase('score', 0.0, f'scoring {target.name} v{current.version}')
    t0 = time.monotonic()
    before = target.evaluate(state, data)
    evaluation_s = time.monotonic() - t0
    train_s = budget_s - (time.monotonic() - start) - EVALUATION_MARGIN * evaluation_s
    if train_s < MIN_TRAIN_S:
        return result(False, f'rolled back: the budget of {budget_s:.0f} s leaves no time to '
                      f'train (scoring one model takes {evaluation_s:.0f} s)', before,
                      ckpt=current)
    phase('train', 0.0, f'training {target.name} from v{current.version} for {train_s:.0f} s')
    t0 = time.monotonic()
    candidate = target.train(state, data, train_s, lambda f: phase('train', f))
    phase('validate', 0.0, f'trained in {time.monotonic() - t0:.0f} s; validating')
    after = target.evaluate(candidate, data)
    gain = after.score - before.score
    elapsed = time.monotonic() - start
    if elapsed > budget_s * (1 + OVERRUN):      # a budget not kept commits nothing
        return result(False, f'rolled back: the cycle took {elapsed:.0f} s of a '
                      f'{budget_s:.0f} s budget', before, after, current)
    if not (gain > 0 and gain >= target.min_gain):
        return result(False, f'rolled back: score {before.score:.3f} -> {after.score:.3f} '
                      f'(must rise by more than {target.min_gain})', before, after, current)
    if after.regression < before.regression:
        return result(False, f'rolled back: regression set got worse: '
                      f'{before.regression:.3f} -> {after.regression:.3f}'
                      + (f' ({after.note})' if after.note else ''), before, after, current)
    phase('commit', 0.0, f'committing {target.name}')
    ckpt = store.commit(candidate, {'metrics': _metrics(after),
                                    'metrics_before': _metrics(before),
                                    'config': current.meta.get('config', {})})
    return result(True, f'committed v{ckpt.version}: score {before.score:.3f} -> '
                  f'{after.score:.3f}', before, after, ckpt)


def _metrics(ev: Evaluation) -> dict[str, float]:
    return {**ev.metrics, 'score': ev.score, 'regression': ev.regression}


def run_cycle(params: dict, names: list[str], deadline: float, max_experiences: int,
              report: Callable[[str, float, str], None], should_stop: Callable[[], bool],
              on_result: Callable[[CycleResult], None]) -> None:
    """Build the sleep node's targets from ``params`` and run ``names`` in turn.

    Each target gets an equal share of what is left until ``deadline`` (time.monotonic),
    so a quick one leaves more; ``report(phase, progress 0..1 over all targets, message)``,
    ``on_result`` as each finishes. Raises Cancelled, or CycleFailed naming the target.
    """
    from sage_sleep.targets import build_targets
    targets, stores = build_targets(params)
    for i, name in enumerate(names):
        budget = {'train_s': max(0.0, deadline - time.monotonic()) / (len(names) - i),
                  'max_experiences': max_experiences}
        try:
            result = run_target(targets[name], stores[name], budget,
                                lambda phase, frac, message, i=i: report(
                                    phase, (i + frac) / len(names), message), should_stop)
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001  (any failure rolls the night back)
            raise CycleFailed(f'{name} failed: {type(exc).__name__}: {exc}') from exc
        on_result(result)


def run_cycle_in_child(params: dict, names: list[str], deadline: float, max_experiences: int,
                       report: Callable[[str, float, str], None],
                       should_stop: Callable[[], bool],
                       on_result: Callable[[CycleResult], None]) -> None:
    """Run ``run_cycle`` in a fresh (spawned) process; see the module doc.

    The callbacks run here, in the caller's thread, as the child's events arrive;
    ``should_stop`` is polled five times a second and passed on to the child.
    """
    ctx = multiprocessing.get_context('spawn')      # never fork a process with DDS threads
    events, stop = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=_cycle_child, name='sage-sleep-cycle', daemon=True,
                        args=(params, names, deadline, max_experiences, events, stop))
    child.start()
    try:
        while True:
            if should_stop():
                stop.set()
            try:
                kind, payload = events.get(timeout=0.2)
            except queue.Empty:
                if not child.is_alive():
                    why = ': killed, out of memory?' if child.exitcode == -9 else ''
                    raise CycleFailed(f'the cycle\'s process died (exit code '
                                      f'{child.exitcode}{why})') from None
                continue
            if kind == 'report':
                report(*payload)
            elif kind == 'result':
                on_result(payload)
            elif kind == 'cancelled':
                raise Cancelled(payload)
            elif kind == 'failed':
                raise CycleFailed(payload)
            else:
                return
    finally:
        stop.set()
        child.join(timeout=10.0)
        if child.is_alive():
            child.kill()
            child.join()


def _cycle_child(params, names, deadline, max_experiences, events, stop) -> None:
    from sage_common.threads import limit_blas_threads
    limit_blas_threads()            # as every node: the night is niced work beside the loop
    threading.Thread(target=_end_with_parent, args=(stop,), daemon=True).start()
    try:
        run_cycle(params, names, deadline, max_experiences,
                  lambda *a: events.put(('report', a)), stop.is_set,
                  lambda r: events.put(('result', r)))
        events.put(('done', None))
    except Cancelled as exc:
        events.put(('cancelled', str(exc)))
    except Exception as exc:  # noqa: BLE001  (reported to the node, which lives on)
        events.put(('failed', str(exc) if isinstance(exc, CycleFailed) else
                    f'{type(exc).__name__}: {exc}'))


def _end_with_parent(stop, grace_s: float = 10.0) -> None:
    """End the night when the node that started it is gone (e.g. killed with -9).

    Nobody is left to take its results, and an orphan would train on, using the
    cores of the next run. Commits are atomic, so ending at any point loses nothing.
    """
    multiprocessing.connection.wait([multiprocessing.parent_process().sentinel])
    stop.set()                      # the cycle stops at its next poll ...
    time.sleep(grace_s)
    os._exit(1)                     # ... or is ended here
