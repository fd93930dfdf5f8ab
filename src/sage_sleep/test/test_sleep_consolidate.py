"""The consolidation cycle commits only improvements, rolls back otherwise, survives kill -9."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from sage_common.checkpoints import CheckpointStore
from sage_sleep.consolidate import Cancelled, run_target
from sage_sleep.triggers import IdleDetector, NightWindow

sys.path.insert(0, os.path.dirname(__file__))
from sleep_fixtures import LinearTarget  # noqa: E402


def base_store(tmp_path):
    store = CheckpointStore(str(tmp_path), 'coherence')
    store.commit({'w': torch.zeros(8)}, {'note': 'base'})
    return store


def test_improvement_is_committed_and_reported(tmp_path):
    store, phases = base_store(tmp_path), []
    result = run_target(LinearTarget(), store, {}, lambda p, f, m: phases.append((p, f)),
                        lambda: False)
    assert result.committed and store.latest_version() == 2
    assert result.after['val_mse'] < result.before['val_mse']
    names = [p for p, _ in phases]      # the model in use is scored before training
    assert names.index('select') < names.index('validate') < names.index('train') \
        < len(names) - 1 - names[::-1].index('validate') < names.index('commit')
    progress = [f for _, f in phases]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert store.open(1).meta['note'] == 'base'  # the base is never overwritten


def test_no_gain_or_regression_rolls_back(tmp_path):
    store = base_store(tmp_path)
    no_gain = LinearTarget(lr=0.0)
    result = run_target(no_gain, store, {}, lambda *a: None, lambda: False)
    assert not result.committed and 'rolled back' in result.message
    worse_regression = LinearTarget(regression_penalty=1.0)
    result = run_target(worse_regression, store, {}, lambda *a: None, lambda: False)
    assert not result.committed and 'regression' in result.message
    assert store.versions() == [1] and store.latest_version() == 1


def test_yields_when_asked(tmp_path):
    store = base_store(tmp_path)
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 5
    with pytest.raises(Cancelled):
        run_target(LinearTarget(), store, {}, lambda *a: None, should_stop)
    assert store.latest_version() == 1


class Timed(LinearTarget):
    """Evaluations that take ``eval_s`` (the candidate's ``slower`` times more); training
    that uses all the time it is given, as the coherence and encoder targets do."""

    def __init__(self, eval_s, slower=1.0):
        super().__init__()
        self.eval_s, self.slower, self.given, self.evaluations = eval_s, slower, None, 0

    def train(self, state, data, budget_s, progress):
        self.given = budget_s
        end = time.monotonic() + budget_s
        while time.monotonic() < end:
            time.sleep(0.01)
        return super().train(state, data, budget_s, progress)

    def evaluate(self, state, data):
        time.sleep(self.eval_s * (self.slower if self.evaluations else 1.0))
        self.evaluations += 1
        return super().evaluate(state, data)


def test_validation_counts_against_the_budget(tmp_path):
    target = Timed(eval_s=0.4)
    result = run_target(target, base_store(tmp_path), {'train_s': 3.0}, lambda *a: None,
                        lambda: False)
    assert result.committed, result.message
    assert result.budget_s == 3.0 and result.elapsed_s <= 3.0
    assert 3.0 - 0.4 - 2 * 0.4 < target.given < 3.0 - 0.4   # what one more scoring leaves


def test_a_budget_too_small_to_validate_or_kept_only_by_overrunning_commits_nothing(tmp_path):
    store = base_store(tmp_path)
    target = Timed(eval_s=0.6)
    result = run_target(target, store, {'train_s': 1.0}, lambda *a: None, lambda: False)
    assert not result.committed and 'no time to train' in result.message
    assert target.given is None and target.evaluations == 1
    slow = Timed(eval_s=0.3, slower=8.0)        # the candidate takes 2.4 s to score
    result = run_target(slow, store, {'train_s': 2.0}, lambda *a: None, lambda: False)
    assert not result.committed and 'took' in result.message
    assert store.versions() == [1]


@pytest.mark.parametrize('phase', ['select', 'train', 'validate', 'commit'])
def test_kill_9_at_each_phase_leaves_store_intact(tmp_path, phase):
    store = base_store(tmp_path)
    script = textwrap.dedent(f"""
        import os, signal, sys, threading, time
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import torch
        from sage_common.checkpoints import CheckpointStore
        from sage_sleep.consolidate import run_target
        from sleep_fixtures import LinearTarget

        class Big(LinearTarget):
            def train(self, state, data, budget_s, progress):
                out = super().train(state, data, budget_s, progress)
                out['pad'] = torch.zeros(4_000_000)  # a slow write to die inside
                return out

        def report(p, frac, msg):
            if p == {phase!r}:
                delay = 0.05 if p == 'commit' else 0.0
                threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
                time.sleep(0.01 if p == 'commit' else 5)

        run_target(Big(), CheckpointStore({str(tmp_path)!r}, 'coherence'), {{}}, report,
                   lambda: False)
    """)
    proc = subprocess.run([sys.executable, '-c', script], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    store = CheckpointStore(str(tmp_path), 'coherence')
    ckpt = store.open()  # whatever latest is, it verifies
    assert ckpt.version in (1, 2)
    store.load_state(ckpt)
    # the next sleep starts cleanly and commits
    result = run_target(LinearTarget(), store, {}, lambda *a: None, lambda: False)
    assert result.committed or ckpt.version == 2
    assert not [n for n in os.listdir(store.dir) if n.startswith('.tmp-')]


def test_night_window_crossing_midnight():
    import datetime as dt
    w = NightWindow.parse('23:00', '05:00')
    assert w.contains(dt.datetime(2026, 1, 1, 23, 30))
    assert w.contains(dt.datetime(2026, 1, 2, 4, 59))
    assert not w.contains(dt.datetime(2026, 1, 2, 5, 0))
    assert not w.contains(dt.datetime(2026, 1, 2, 12, 0))
    assert w.seconds_left(dt.datetime(2026, 1, 1, 23, 30)) == 5.5 * 3600   # a night's budget
    assert w.seconds_left(dt.datetime(2026, 1, 2, 4, 59)) == 60
    with pytest.raises(ValueError, match='HH:MM'):
        NightWindow.parse('25h', '05:00')


def test_idle_detector():
    idle = IdleDetector(idle_for_s=10, salience_threshold=0.3, activity_threshold=0.1)
    idle.observe(0.0, salience=0.9)
    idle.observe(1.0, salience=0.1)
    assert not idle.idle(5.0) and idle.idle(11.0)
    idle.observe(12.0, salience=0.5)
    assert not idle.idle(30.0) and idle.busy_since(11.5)
