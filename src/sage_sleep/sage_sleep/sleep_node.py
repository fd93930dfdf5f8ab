"""The sleep node: a lifecycle node that consolidates the day's experiences.

configure: allocate the checkpoint stores and training targets, create the
status and checkpoint publishers. activate: start the triggers (night window,
idleness) and accept Sleep goals. deactivate: stop triggers, cancel a running
sleep. cleanup: release everything. The work itself is sage_sleep.consolidate;
this node only decides when, reports progress, and announces new checkpoints.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import threading
import time

from rclpy.action import CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import TransitionCallbackReturn
from sage_common.checkpoints import CheckpointError
from sage_ros.guard import GuardedLifecycleNode, guarded_action_server
from sage_ros.common import (Diagnostics, Param, declare_parameters, parsed_by,
                             qos_from_name, stamp, wait_for_thread)
from sage_msgs.action import Sleep
from sage_msgs.msg import Checkpoint, Salience, SleepStatus
from sage_sleep.consolidate import Cancelled, run_cycle_in_child
from sage_sleep.targets import TARGETS
from sage_sleep.triggers import IdleDetector, NightWindow, parse_hhmm


PARAMS = [
    Param('model_dir', 'models', 'checkpoint root (one directory per model)'),
    Param('store_path', 'memory/experiences.db', 'experience store (SQLite) to learn from'),
    Param('exchanges_path', 'memory/exchanges.jsonl', 'cognition exchanges (JSON lines) the '
          'lora target learns from; the cognition node writes them'),
    Param('targets', ['coherence'], f'models to improve, subset of {TARGETS}',
          check=lambda v: None if set(v) <= set(TARGETS) else f'targets must be in {TARGETS}'),
    Param('night_start', '01:00', 'start of the nightly window, HH:MM in local time on the '
          'node clock (sim time when use_sim_time is set)', check=parsed_by(parse_hhmm)),
    Param('night_end', '05:00', 'end of the nightly window, local HH:MM',
          check=parsed_by(parse_hhmm)),
    Param('idle_after_s', 600.0, 'sleep after this long with low salience and activity',
          low=1.0, high=86400.0),
    Param('idle_salience', 0.2, 'salience under which the robot counts as idle',
          low=0.0, high=1.0),
    Param('yield_grace_s', 10.0, 'salience this soon after a cycle starts does not stop it '
          '(the day\'s last steps are still being scored); later, the robot is active again '
          'and the sleep yields', low=0.0, high=3600.0),
    Param('min_interval_s', 3600.0, 'at least this long between automatic sleeps',
          low=0.0, high=604800.0),
    Param('train_s', 120.0, 'wall-time budget per target, seconds: training and scoring '
          '(validation and regression episodes) together; a night also ends at night_end',
          low=1.0, high=36000.0),
    Param('max_experiences', 10000, 'experiences replayed per cycle', low=10,
          high=10_000_000),
    Param('keep_versions', 5, 'checkpoint versions kept per model (plus the base)',
          low=2, high=1000),
    Param('seed', 0, 'random seed of selection and augmentation', low=0, high=2**31 - 1),
    Param('validation_episodes', 20, 'world episodes that score a candidate', low=1,
          high=10000),
    Param('regression_episodes', 30, 'morning-suite episodes that must not get worse',
          low=1, high=10000),
]


class SleepNode(GuardedLifecycleNode):
    """Lifecycle node running consolidation cycles on triggers and on Sleep goals."""

    def __init__(self, **kwargs):
        super().__init__(kwargs.pop('node_name', 'sleep'), **kwargs)
        self.p = declare_parameters(self, PARAMS)
        self._reset_state()

    def _reset_state(self) -> None:
        self.stores = {}        # checkpoint stores by target: the night's child trains
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._cycles = 0
        self._last_sleep_s = self._sleep_started_s = -float('inf')
        self._status = SleepStatus(phase='idle')
        self._timer = self._action = self.diag = None
        self._subs = []

    # ----------------------------------------------------------- lifecycle
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self._build_targets()
        except (CheckpointError, OSError, ValueError) as exc:
            self.get_logger().error(f'cannot configure sleep: {exc}')
            return TransitionCallbackReturn.FAILURE
        self.night = NightWindow.parse(self.p['night_start'], self.p['night_end'])
        self.idle = IdleDetector(self.p['idle_after_s'], self.p['idle_salience'], 0.05)
        self.pub_status = self.create_lifecycle_publisher(SleepStatus, 'sage/sleep/status', 10)
        self.pub_ckpt = self.create_lifecycle_publisher(Checkpoint, 'sage/checkpoint',
                                                        qos_from_name('LATCHED'))
        self.diag = Diagnostics(self)
        self.diag.set('OK', 'configured', targets=','.join(self.p['targets']))
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        group = ReentrantCallbackGroup()
        self._subs.append(self.create_subscription(
            Salience, 'sage/salience', self._on_salience, qos_from_name('SENSOR_DATA')))
        self._timer = self.create_timer(1.0, self._check_triggers)
        self._action = guarded_action_server(self, Sleep, 'sage/sleep', self._execute,
                                             goal_callback=self._on_goal,
                                             cancel_callback=lambda _: CancelResponse.ACCEPT,
                                             callback_group=group)
        self.diag.set('OK', 'awake, waiting for a trigger')
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_worker()
        if self._timer is not None:
            self.destroy_timer(self._timer)
        if self._action is not None:
            self._action.destroy()
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._timer = self._action = None
        self._subs = []
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._stop_worker()
        self.destroy_lifecycle_publisher(self.pub_status)
        self.destroy_lifecycle_publisher(self.pub_ckpt)
        if self.diag is not None:
            self.diag.destroy()
        self._reset_state()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._stop_worker()
        return TransitionCallbackReturn.SUCCESS

    def _build_targets(self) -> None:
        """Build the targets; before the memory node made the store, wait for it."""
        from sage_sleep.targets import build_targets, check_models, store_missing
        if store_missing(self.p):
            check_models(self.p)        # a missing model is an error now, not at night
            self.get_logger().info('no experience store yet: the first cycle will look again')
            return
        _, self.stores = build_targets(self.p)   # built here to fail fast; trained in the child

    # ----------------------------------------------------------- triggers
    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_salience(self, msg: Salience) -> None:
        self.idle.observe(self._now_s(), salience=msg.total)
        if self.busy() and self.idle.busy_since(self._sleep_started_s +
                                                self.p['yield_grace_s']):
            self._stop.set()  # the robot became active: yield at once

    def busy(self) -> bool:
        """Return True while a consolidation cycle runs."""
        return self._worker is not None and self._worker.is_alive()

    def _check_triggers(self) -> None:
        now = self._now_s()
        if self.busy() or now - self._last_sleep_s < self.p['min_interval_s']:
            return
        # the node clock: with use_sim_time the world's /clock, so a day can be compressed
        if self.night.contains(dt.datetime.fromtimestamp(now)):
            self._start('night')
        elif self.idle.idle(now):
            self._start('idle')

    def _start(self, trigger: str, cycle=None) -> None:
        """Run a cycle in its own thread (``cycle``: a Sleep goal's, else the trigger's)."""
        self._stop.clear()
        self._sleep_started_s = self._now_s()
        self._last_sleep_s = self._sleep_started_s
        self._worker = threading.Thread(
            target=cycle or (lambda: self._run_cycle(trigger, None)), daemon=True)
        self._worker.start()

    # ----------------------------------------------------------- action
    def _on_goal(self, goal) -> GoalResponse:
        if self.busy():
            self.get_logger().warning('Sleep goal rejected: a cycle is already running')
            return GoalResponse.REJECT
        if goal.targets and not set(goal.targets) <= set(self.p['targets']):
            self.get_logger().warning(f'Sleep goal rejected: targets {list(goal.targets)} '
                                      f'not configured ({self.p["targets"]})')
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    async def _execute(self, goal_handle):
        done = concurrent.futures.Future()      # the cycle's thread sets it; triggers wait

        def cycle():
            try:
                done.set_result(self._run_cycle('manual', goal_handle))
            except BaseException as exc:  # noqa: BLE001  (the goal answers, the node lives)
                done.set_exception(exc)
        self._start('manual', cycle)
        results = await wait_for_thread(done)
        result = Sleep.Result()
        if goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif results is None:
            goal_handle.abort()
        else:
            goal_handle.succeed()
        if results:
            result.committed = any(r.committed for r in results)
            result.message = '; '.join(f'{r.target}: {r.message}' for r in results)
            result.checkpoint = ','.join(f'{r.target}:v{r.checkpoint.version}'
                                         for r in results if r.checkpoint)
            names = sorted({k for r in results for k in r.before})
            result.metric_names = names
            result.metrics_before = [float(results[0].before.get(k, float('nan')))
                                     for k in names]
            result.metrics_after = [float(results[0].after.get(k, float('nan')))
                                    for k in names]
        else:
            result.message = self._status.message
        return result

    # ----------------------------------------------------------- the cycle
    def _run_cycle(self, trigger: str, goal_handle):
        goal = goal_handle.request if goal_handle is not None else None
        names = list(goal.targets) if goal is not None and goal.targets else self.p['targets']
        if not self.stores:
            try:
                self._build_targets()
            except (CheckpointError, OSError, ValueError) as exc:
                self._report(trigger, 'rollback', 1.0, f'cannot sleep: {exc}', goal_handle)
                return None
            if not self.stores:
                self._report(trigger, 'done', 1.0, 'nothing to learn from yet: no experience '
                             'store (the memory node makes it)', goal_handle)
                return []
        total_s = (goal.max_duration_s if goal is not None and goal.max_duration_s > 0
                   else self.p['train_s'] * len(names))
        if trigger == 'night':          # the night ends at night_end on the node clock
            total_s = min(total_s, self.night.seconds_left(
                dt.datetime.fromtimestamp(self._now_s())))
        deadline = time.monotonic() + total_s
        max_experiences = (goal.max_experiences if goal is not None and goal.max_experiences > 0
                           else self.p['max_experiences'])
        self._cycles += 1
        results = []

        def should_stop() -> bool:
            return self._stop.is_set() or (goal_handle is not None
                                           and goal_handle.is_cancel_requested)

        def report(phase, progress, message):
            self._report(trigger, phase, progress, message, goal_handle)

        def on_result(result):
            results.append(result)
            self._status.metric_names = list(result.before)
            self._status.metrics_before = [float(v) for v in result.before.values()]
            self._status.metrics_after = [float(result.after.get(k, float('nan')))
                                          for k in result.before]
            if result.committed:
                self._announce(result.target, result.checkpoint)
        # a fresh process a night (consolidate's doc); a new seed a night, as one rng would
        params = dict(self.p, seed=self.p['seed'] + self._cycles)
        try:
            run_cycle_in_child(params, names, deadline, max_experiences, report, should_stop,
                               on_result)
        except Cancelled as exc:
            self._report(trigger, 'idle', 0.0, f'sleep yielded: {exc}', goal_handle)
            return results or None
        except Exception as exc:  # a failed cycle must never take the node down
            self.get_logger().error(f'sleep cycle failed: {exc}')
            self._report(trigger, 'rollback', 1.0, str(exc), goal_handle)
            self.diag.set('ERROR', f'last cycle failed: {exc}')
            return None
        self._report(trigger, 'done', 1.0, '; '.join(
            f'{r.target}: {r.message} ({r.elapsed_s:.0f} s of {r.budget_s:.0f})'
            for r in results), goal_handle)
        self.diag.set('OK', f'last cycle: {self._status.message}', cycles=self._cycles)
        return results

    def _announce(self, name, ckpt) -> None:
        msg = Checkpoint(model=name, path=ckpt.path, version=ckpt.version, sha256=ckpt.sha256)
        msg.header.stamp = stamp(self)
        self.pub_ckpt.publish(msg)
        self.get_logger().info(f'announced {name} v{ckpt.version} at {ckpt.path}')

    def _report(self, trigger, phase, progress, message, goal_handle) -> None:
        s = self._status
        s.header.stamp = stamp(self)
        s.phase, s.progress, s.trigger, s.cycle = phase, float(progress), trigger, self._cycles
        if message:
            s.message = message
        s.checkpoint = ','.join(f'{n}:v{st.latest_version()}' for n, st in self.stores.items())
        self.pub_status.publish(s)
        if goal_handle is not None:
            goal_handle.publish_feedback(Sleep.Feedback(phase=phase, progress=float(progress),
                                                        message=s.message))

    def _stop_worker(self) -> None:
        self._stop.set()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=30.0)
        self._worker = None


def main(args=None):
    """Run the sleep node (unconfigured; `sage run` or a lifecycle manager starts it)."""
    from sage_ros.common import run_node
    raise SystemExit(run_node(SleepNode, args))
