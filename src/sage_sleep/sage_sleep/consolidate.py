"""One sleep cycle: select, augment, train, validate, and commit only an improvement.

ROS-free. Each model that sleep improves is a ``Target`` (coherence model,
vision encoder, LoRA adapter). The cycle never touches the model in use until
a candidate has beaten it on held-out data and the regression set; then the
candidate is committed as a new checkpoint version (atomic, see
sage_common.checkpoints) and announced. Anything else is a rollback with a
reason. ``should_stop`` is polled often, so a sleep yields at once when the
robot becomes active again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from sage_common.checkpoints import Checkpoint, CheckpointStore

PHASES = ('select', 'augment', 'train', 'validate', 'commit')
# share of a target's progress bar spent in each phase
_SPAN = {'select': (0.0, 0.05), 'augment': (0.05, 0.1), 'train': (0.1, 0.75),
         'validate': (0.75, 0.97), 'commit': (0.97, 1.0)}


class Cancelled(Exception):
    """The sleep was asked to stop (robot active, action cancelled, node deactivated)."""


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


def run_target(target: Target, store: CheckpointStore, budget: dict,
               report: Callable[[str, float, str], None],
               should_stop: Callable[[], bool]) -> CycleResult:
    """Run one consolidation cycle for one target; see the module doc."""
    def phase(name: str, frac: float = 0.0, message: str = '') -> None:
        if should_stop():
            raise Cancelled(f'stopped during {name}')
        lo, hi = _SPAN[name]
        report(name, lo + (hi - lo) * frac, message)

    current = store.open()              # verified; raises CheckpointError if corrupted
    state = store.load_state(current)
    phase('select', 0.0, f'selecting experiences for {target.name}')
    data = target.select(budget)
    if data is None:
        return CycleResult(target.name, False, 'not enough experiences to learn from',
                           checkpoint=current)
    phase('augment')
    data = target.augment(data)
    phase('train', 0.0, f'training {target.name} from v{current.version}')
    start = time.monotonic()
    candidate = target.train(state, data, float(budget.get('train_s', 60.0)),
                             lambda f: phase('train', f))
    phase('validate', 0.0, f'trained in {time.monotonic() - start:.0f} s; validating')
    before = target.evaluate(state, data)
    phase('validate', 0.5)
    after = target.evaluate(candidate, data)
    gain = after.score - before.score
    better = gain > 0 and gain >= target.min_gain
    regression_ok = after.regression >= before.regression
    m_before, m_after = _metrics(before), _metrics(after)
    if not (better and regression_ok):
        why = (f'score {before.score:.3f} -> {after.score:.3f} (must rise by more than '
               f'{target.min_gain})'
               if not better else
               f'regression set got worse: {before.regression:.3f} -> {after.regression:.3f}'
               + (f' ({after.note})' if after.note else ''))
        report('commit', 1.0, f'rolled back {target.name}: {why}')
        return CycleResult(target.name, False, f'rolled back: {why}', m_before, m_after,
                           current)
    phase('commit', 0.0, f'committing {target.name}')
    ckpt = store.commit(candidate, {'metrics': m_after, 'metrics_before': m_before,
                                    'config': current.meta.get('config', {})})
    report('commit', 1.0, f'committed {target.name} v{ckpt.version}: score '
           f'{before.score:.3f} -> {after.score:.3f}')
    return CycleResult(target.name, True,
                       f'committed v{ckpt.version}: score {before.score:.3f} -> '
                       f'{after.score:.3f}', m_before, m_after, ckpt)


def _metrics(ev: Evaluation) -> dict[str, float]:
    return {**ev.metrics, 'score': ev.score, 'regression': ev.regression}
