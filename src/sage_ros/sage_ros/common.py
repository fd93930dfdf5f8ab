"""Shared ROS 2 adapter helpers for SAGE nodes.

Everything here is thin glue between rclpy and SAGE's ROS-free libraries:
QoS chosen by a string parameter (as isaac_ros does), parameters declared with
descriptors and validated, a diagnostics publisher, Feature construction with
stamps from the node clock, and a standard ``main`` for nodes.
"""

from __future__ import annotations

import array
import concurrent.futures
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (HistoryPolicy, QoSProfile, ReliabilityPolicy, DurabilityPolicy,
                       qos_profile_sensor_data, qos_profile_system_default)
from sage_common.threads import limit_blas_threads

QOS_CHOICES = ('SENSOR_DATA', 'DEFAULT', 'SYSTEM_DEFAULT', 'RELIABLE', 'BEST_EFFORT', 'LATCHED')


def qos_from_name(name: str, depth: int = 10) -> QoSProfile:
    """Return the QoS profile named by a parameter string (see QOS_CHOICES)."""
    key = name.strip().upper()
    if key == 'SENSOR_DATA':
        profile = QoSProfile(depth=qos_profile_sensor_data.depth)
        profile.reliability = ReliabilityPolicy.BEST_EFFORT
        profile.history = HistoryPolicy.KEEP_LAST
        return profile
    if key == 'SYSTEM_DEFAULT':
        return qos_profile_system_default
    if key in ('DEFAULT', 'RELIABLE'):
        return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
    if key == 'BEST_EFFORT':
        return QoSProfile(depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT)
    if key == 'LATCHED':
        return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
    raise ValueError(f'unknown QoS {name!r}: choose one of {", ".join(QOS_CHOICES)}')


@dataclass(frozen=True)
class Param:
    """A parameter with its default, description and constraints.

    ``low``/``high`` bound numbers (inclusive); ``choices`` restricts strings;
    ``check`` is an extra validator returning an error string or None.
    """

    name: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    choices: Sequence[str] | None = None
    read_only: bool = False
    check: Callable[[Any], str | None] | None = None

    def descriptor(self) -> ParameterDescriptor:
        """Return the rcl ParameterDescriptor; ranges show in `ros2 param describe`."""
        text = self.description
        if self.choices:
            text += f' One of: {", ".join(self.choices)}.'
        desc = ParameterDescriptor(description=text, read_only=self.read_only)
        if self.low is not None and self.high is not None:
            if isinstance(self.default, bool):
                pass
            elif isinstance(self.default, int):
                desc.integer_range = [IntegerRange(from_value=int(self.low),
                                                   to_value=int(self.high), step=0)]
            elif isinstance(self.default, float):
                desc.floating_point_range = [FloatingPointRange(
                    from_value=float(self.low), to_value=float(self.high), step=0.0)]
        return desc

    def error(self, value: Any) -> str | None:
        """Say what is wrong with ``value``, or None if it is acceptable."""
        if isinstance(value, float) and not math.isfinite(value):
            return f'{self.name} must be finite, got {value}'
        if self.low is not None and value < self.low:
            return f'{self.name} must be >= {self.low}, got {value}'
        if self.high is not None and value > self.high:
            return f'{self.name} must be <= {self.high}, got {value}'
        if self.choices and value not in self.choices:
            return f'{self.name} must be one of {list(self.choices)}, got {value!r}'
        if self.check is not None:
            return self.check(value)
        return None


def parsed_by(parse: Callable[[Any], Any]) -> Callable[[Any], str | None]:
    """Return a ``Param`` check that runs ``parse`` and gives its ValueError's message."""
    def check(value):
        try:
            parse(value)
        except ValueError as exc:
            return str(exc)
        return None
    return check


class ParameterError(ValueError):
    """A node was given a parameter value it cannot use."""


def declare_parameters(node: Node, params: Iterable[Param]) -> dict[str, Any]:
    """Declare and validate ``params``; return their values by name.

    Invalid start-up values raise ParameterError with every problem listed.
    SAGE nodes build their objects from these values once, so a later change
    (``ros2 param set``) is refused with that reason instead of being accepted and
    silently not applied.
    """
    params = list(params)
    by_name = {p.name: p for p in params}
    values, problems = {}, []
    for p in params:
        try:
            value = node.declare_parameter(p.name, p.default, p.descriptor()).value
        except Exception as exc:  # rclpy raises its own type errors for wrong types
            problems.append(f'{p.name}: {exc}')
            continue
        problem = p.error(value)
        if problem:
            problems.append(problem)
        values[p.name] = value
    if problems:
        raise ParameterError(f'{node.get_name()}: invalid parameters: ' + '; '.join(problems))

    def on_set(changes) -> SetParametersResult:
        for change in changes:
            spec = by_name.get(change.name)
            if spec is None:
                continue
            problem = spec.error(change.value) or (
                f'{change.name} is read when the node starts: restart the node with the new '
                f'value (params file or -p {change.name}:=...)')
            return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
    return values


def stamp(node: Node):
    """Return the node clock's current time as a message (honours use_sim_time)."""
    return node.get_clock().now().to_msg()


def seconds(msg_stamp) -> float:
    """Return a builtin_interfaces/Time (a header's stamp) in seconds."""
    return msg_stamp.sec + msg_stamp.nanosec * 1e-9


def make_feature(node: Node, modality: str, data: Sequence[float], trust: float,
                 quality: Mapping[str, float] | None = None, frame_id: str = '',
                 header_stamp=None):
    """Build a sage_msgs/Feature, clamping trust to [0, 1]."""
    from sage_msgs.msg import Feature

    msg = Feature()
    msg.header.stamp = header_stamp if header_stamp is not None else stamp(node)
    msg.header.frame_id = frame_id
    msg.modality = modality
    msg.data = array.array('f', np.asarray(data, np.float32).tobytes())   # fast path
    msg.trust = float(min(1.0, max(0.0, trust))) if math.isfinite(trust) else 0.0
    quality = dict(quality or {})
    msg.quality_names = list(quality)
    msg.quality_values = [float(v) for v in quality.values()]
    return msg


LEVELS = {'OK': DiagnosticStatus.OK, 'WARN': DiagnosticStatus.WARN,
          'ERROR': DiagnosticStatus.ERROR, 'STALE': DiagnosticStatus.STALE}


# A callback error keeps the node's diagnostics at WARN for this long.
GUARD_WARN_S = 10.0


class Diagnostics:
    """Publish one DiagnosticStatus for a node on ``diagnostics`` at a fixed period.

    The node updates level/message/values whenever it likes; the timer
    publishes the latest, so a stuck callback shows up as a stale stamp.
    """

    def __init__(self, node: Node, name: str | None = None, period_s: float = 1.0,
                 hardware_id: str = ''):
        self._node = node
        self.name = name or node.get_fully_qualified_name()
        self.hardware_id = hardware_id
        self.level, self.message = 'OK', 'starting'
        self.values: dict[str, Any] = {}
        self._pub = node.create_publisher(DiagnosticArray, 'diagnostics', 10)
        self._timer = node.create_timer(period_s, self.publish)

    def set(self, level: str, message: str, **values: Any) -> None:
        """Set the status; keyword values are merged into the key/value list."""
        if level not in LEVELS:
            raise ValueError(f'diagnostic level must be one of {list(LEVELS)}, got {level!r}')
        self.level, self.message = level, message
        self.values.update(values)

    def publish(self) -> None:
        """Publish the current status now, with the node's callback errors (sage_ros.guard)."""
        level, message, values = self.level, self.message, dict(self.values)
        guard = vars(self._node).get('_sage_guard')
        if guard is not None and guard.total:
            values.update(callback_errors=guard.total, last_callback_error=guard.last_error)
            recent = time.monotonic() - guard.last_error_at < GUARD_WARN_S
            if recent and LEVELS[level] < LEVELS['WARN']:
                level, message = 'WARN', f'{message}; callback error: {guard.last_error}'
        status = DiagnosticStatus(level=LEVELS[level], name=self.name, message=message,
                                  hardware_id=self.hardware_id)
        status.values = [KeyValue(key=str(k), value=_fmt(v)) for k, v in values.items()]
        msg = DiagnosticArray()
        msg.header.stamp = stamp(self._node)
        msg.status = [status]
        self._pub.publish(msg)

    def destroy(self) -> None:
        """Release the timer and publisher (lifecycle cleanup)."""
        self._node.destroy_timer(self._timer)
        self._node.destroy_publisher(self._pub)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f'{value:.6g}'
    return str(value)


class Throttle:
    """Allow an action at most once per ``period_s`` of wall time (for warnings)."""

    def __init__(self, period_s: float = 5.0):
        import time
        self._time = time.monotonic
        self.period_s = period_s
        self._last = -math.inf

    def __call__(self) -> bool:
        """Return True if enough time has passed since the last True."""
        now = self._time()
        if now - self._last >= self.period_s:
            self._last = now
            return True
        return False


def make_executor(nodes: Sequence[Node], context=None) -> SingleThreadedExecutor:
    """Return the executor spinning ``nodes``: single-threaded, for every SAGE node.

    It costs far less per message than the multi-threaded one: an IMU node fed at
    1 kHz took in all 5,000 samples on it and 400 on the multi-threaded one
    (bench/sensors.py), and the multi-threaded one's own loop took 0.14-0.3 of a core
    in the idle cognition and sleep nodes on 2 cores. Long work (a thought, a night)
    runs in the node's own thread; an action awaits it with ``wait_for_thread``.
    """
    executor = SingleThreadedExecutor(context=context)
    for node in nodes:
        executor.add_node(node)
    return executor


class _Pass:
    """An awaitable that hands the executor back for one pass."""

    def __await__(self):
        yield


async def wait_for_thread(future: concurrent.futures.Future, poll_s: float = 0.05):
    """Await, in a coroutine callback, the result another thread sets on ``future``.

    rclpy resumes a waiting coroutine on every pass of its executor, so awaiting a
    future that another thread completes keeps the executor's thread busy (a whole
    core). Blocking up to ``poll_s`` a pass instead costs almost nothing; the node's
    other callbacks run between passes, at most ``poll_s`` late while it waits.
    """
    while True:
        try:
            return future.result(timeout=poll_s)
        except concurrent.futures.TimeoutError:
            await _Pass()


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    """Run a SAGE node in its own process: init, spin (see make_executor), shut down.

    SIGINT and SIGTERM (a terminal's Ctrl-C, `sage run`, `ros2 launch`) end it cleanly
    with exit 0: the handlers only set a flag, so no KeyboardInterrupt can cut a
    node's cleanup short. Returns 2 when the node refused its parameters (a respawn
    would not help), 1 when it failed to start or its executor failed.
    """
    import os
    import signal
    import sys
    import threading
    import traceback

    from rclpy.signals import SignalHandlerOptions

    limit_blas_threads()
    rclpy.init(args=args if args is not None else sys.argv,
               signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = executor = None
    failed: list = []
    code = 0
    try:
        node = factory()
        executor = make_executor([node])

        def spin():
            try:
                executor.spin()
            except ExternalShutdownException:
                pass
            except Exception:  # the executor itself failed: report, exit non-zero
                if not stop.is_set():   # not rclpy's own shutdown race (a destroyed handle)
                    failed.append(traceback.format_exc())
            stop.set()
        thread = threading.Thread(target=spin, daemon=True)
        thread.start()
        while not stop.wait(0.25) and rclpy.ok():
            pass
        executor.shutdown(timeout_sec=2.0)
        # a long callback finishes before the node is destroyed under it; `sage run` and
        # launch escalate to SIGKILL after 10 s: waits here and in destroy_node stay under
        thread.join(timeout=5.0)
        if failed:
            print(failed[0], file=sys.stderr)
            code = 1
    except ParameterError as exc:
        print(f'[ERROR] {exc}', file=sys.stderr)
        code = 2
    except Exception:  # a node must report why it could not start, then exit non-zero
        traceback.print_exc()
        code = 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    if any(t.is_alive() for t in threading.enumerate() if t.daemon):
        # A daemon thread still inside native code (a torch encode, a model load) can
        # make the interpreter's teardown abort the process (SIGABRT, "terminate
        # called without an active exception"). The node has cleaned up: skip it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
