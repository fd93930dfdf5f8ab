"""No callback can kill a node: the one guard around every callback of a SAGE node.

``GuardedNode`` and ``GuardedLifecycleNode`` are rclpy's Node and LifecycleNode whose
``create_subscription``, ``create_timer`` and ``create_service`` wrap the callback in
``CallbackGuard``: an exception is caught, counted per callback, logged (throttled) and
reported on ``diagnostics`` (see ``Diagnostics``) with the topic and the reason, and the
node goes on. A service answers with its (default) response. ``guarded_action_server``
does the same for an action's goal, cancel and execute callbacks (an execute that raises
aborts its goal). Validation at the boundary (sage_ros.validate) rejects what it knows to
be bad; the guard is the net under everything else.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
import traceback

from rclpy.lifecycle import LifecycleNode
from rclpy.node import Node


class CallbackGuard:
    """Catch, count and remember the exceptions of a node's callbacks."""

    def __init__(self, node, warn_period_s: float = 5.0):
        self._node = node
        self._lock = threading.Lock()
        self.errors: dict[str, int] = {}
        self.last_error = ''
        self.last_error_at = -float('inf')
        self._warned_at: dict[str, float] = {}
        self.warn_period_s = warn_period_s

    @property
    def total(self) -> int:
        """Exceptions caught so far, all callbacks together."""
        return sum(self.errors.values())

    def record(self, what: str, exc: BaseException) -> None:
        """Count ``exc`` raised by callback ``what`` and log it (once per period)."""
        now = time.monotonic()
        with self._lock:
            self.errors[what] = self.errors.get(what, 0) + 1
            self.last_error = f'{what}: {type(exc).__name__}: {exc}'[:300]
            self.last_error_at = now
            warn = now - self._warned_at.get(what, -float('inf')) >= self.warn_period_s
            if warn:
                self._warned_at[what] = now
        if warn:
            where = traceback.extract_tb(exc.__traceback__)[-1:]
            at = f' at {where[0].filename}:{where[0].lineno}' if where else ''
            self._node.get_logger().error(
                f'callback error in {self.last_error}{at} ({self.errors[what]} in this '
                f'callback so far); the node goes on')

    def wrap(self, what: str, fn, fallback=None):
        """Return ``fn`` guarded; ``fallback(*args)`` gives the value returned on an error."""
        if fn is None:
            return None
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def guarded_async(*args, **kwargs):
                try:
                    return await fn(*args, **kwargs)
                except Exception as exc:  # the guard's purpose: report and go on
                    self.record(what, exc)
                    return fallback(*args) if fallback else None
            return guarded_async

        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # the guard's purpose: report and go on
                self.record(what, exc)
                return fallback(*args) if fallback else None
        return guarded


def _response_fallback(request, response):
    return response


class _Guarded:
    """Mixin: wrap every callback a node registers in its CallbackGuard."""

    @property
    def guard(self) -> CallbackGuard:
        """Return this node's CallbackGuard (made on first use: rclpy creates timers early)."""
        guard = self.__dict__.get('_sage_guard')
        if guard is None:
            guard = self.__dict__['_sage_guard'] = CallbackGuard(self)
        return guard

    def create_subscription(self, msg_type, topic, callback, qos_profile, **kwargs):
        """Create a subscription whose callback is guarded."""
        return super().create_subscription(
            msg_type, topic, self.guard.wrap(f'subscription {topic}', callback),
            qos_profile, **kwargs)

    def create_timer(self, timer_period_sec, callback, *args, **kwargs):
        """Create a timer whose callback is guarded."""
        name = getattr(callback, '__name__', 'timer')
        return super().create_timer(timer_period_sec,
                                    self.guard.wrap(f'timer {name}', callback), *args, **kwargs)

    def create_service(self, srv_type, srv_name, callback, **kwargs):
        """Create a service whose callback is guarded (on an error it answers the default)."""
        return super().create_service(
            srv_type, srv_name,
            self.guard.wrap(f'service {srv_name}', callback, _response_fallback), **kwargs)


class GuardedNode(_Guarded, Node):
    """An rclpy Node whose callbacks cannot kill it."""


class GuardedLifecycleNode(_Guarded, LifecycleNode):
    """An rclpy LifecycleNode whose callbacks cannot kill it."""


def guarded_action_server(node, action_type, name: str, execute_callback, **kwargs):
    """Create an rclpy ActionServer whose callbacks go through ``node.guard``.

    An execute callback that raises aborts its goal and returns an empty result.
    """
    from rclpy.action import ActionServer, CancelResponse, GoalResponse
    guard = node.guard

    def aborted(goal_handle):
        try:
            goal_handle.abort()
        except Exception:  # the goal may already be finished or the server gone
            pass
        return action_type.Result()

    for key, default in (('goal_callback', GoalResponse.REJECT),
                         ('cancel_callback', CancelResponse.REJECT)):
        if key in kwargs:
            kwargs[key] = guard.wrap(f'action {name} {key}', kwargs[key],
                                     lambda *_, d=default: d)
    return ActionServer(node, action_type, name,
                        guard.wrap(f'action {name}', execute_callback, aborted), **kwargs)
