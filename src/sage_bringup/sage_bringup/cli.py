"""The `sage` command: start SAGE and run its jobs, without ROS 2's launch.

    sage run                      the whole graph on the built-in world
    sage run --source bag ...     the same graph fed from a rosbag
    sage status                   nodes, topics and diagnostics of a running graph
    sage life --days 5            days and nights in the graph: does SAGE get better?

`sage <command> --help` explains each command.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

from sage_bringup import graph
from sage_bringup.live_node import live_line

EXIT_CONFIG = 2      # bad arguments or params file
EXIT_NODE_FAILED = 1  # a node failed to start or died


def _localhost_only() -> None:
    # Safe default: keep DDS discovery on this machine unless the user chose otherwise.
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')


def add_graph_args(p: argparse.ArgumentParser) -> None:
    """Arguments shared with launch/sage.launch.py (same names, same meaning)."""
    p.add_argument('--namespace', default='', help='namespace for every node and topic')
    p.add_argument('--use-sim-time', choices=('true', 'false'), default=None,
                   help='use /clock (default: true for the world and bag sources)')
    p.add_argument('--params-file', default=None,
                   help='ROS 2 params YAML (default: the installed config/sage.yaml)')
    p.add_argument('--log-level', choices=graph.LOG_LEVELS, default='info')
    p.add_argument('--source', choices=graph.SOURCES, default='world',
                   help='input: the built-in world (default), a bag (--bag), or hardware drivers')


def resolve_graph(args) -> tuple[str, list[graph.NodeSpec], str, bool]:
    """Validate the graph arguments; return (params_file, nodes, namespace, use_sim_time)."""
    params_file = os.path.abspath(args.params_file or graph.default_params_file())
    params = graph.load_params(params_file)
    nodes = graph.select_nodes(params, args.source, getattr(args, 'only', None))
    namespace = graph.check_namespace(args.namespace)
    sim_time = (args.source in ('world', 'bag')) if args.use_sim_time is None \
        else args.use_sim_time == 'true'
    return graph.params_file_for(params_file, namespace), nodes, namespace, sim_time


def ros_args(spec: graph.NodeSpec, params_file: str, namespace: str, sim_time: bool,
             source: str) -> list[str]:
    """Return the --ros-args a node gets: params file, overrides, namespace, sim time."""
    out = ['--ros-args', '-r', f'__node:={spec.name}', '--params-file', params_file,
           '-p', f'use_sim_time:={"true" if sim_time else "false"}']
    if namespace:
        out += ['-r', f'__ns:={namespace}']
    for key, value in spec.params_for(source).items():
        out += ['-p', f'{key}:={_yaml_scalar(value)}']
    return out


def _yaml_scalar(value) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


# ---------------------------------------------------------------- in one process

def run_in_process(specs, params_file, namespace, sim_time, source, log_level,
                   duration: float | None, live: bool = True) -> int:
    """Start every node in this process.

    The nodes spin on one single-threaded executor (sage_ros.common.make_executor)
    and a node that asks for its own (``own_executor``: the safety node) on another,
    each in its own thread.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from sage_common.threads import limit_blas_threads
    from sage_ros.common import make_executor, ParameterError

    limit_blas_threads()
    rclpy.init(args=['--ros-args', '--log-level', log_level])
    nodes, code, failures, line = [], 0, [], None
    stop = threading.Event()
    # Both signals only set the flag: a KeyboardInterrupt raised inside an executor can
    # leave one of its locks held, and its shutdown then waits forever for the workers.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    executors, spinners = [], []

    def spin(executor):
        # spin with a timeout: a graph with no timers (bag or hardware input) would block
        # in rcl_wait forever and never see the stop flag
        try:
            while not stop.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=0.25)
        except ExternalShutdownException:
            pass
        except Exception as exc:  # a node's callback raised: report and fail
            failures.append(exc)
        stop.set()

    try:
        for spec in specs:
            if stop.is_set():
                break
            cls = spec.node_class()
            try:
                node = cls(cli_args=ros_args(spec, params_file, namespace, sim_time, source))
            except ParameterError as exc:
                print(f'sage: node {spec.name} refused its parameters: {exc}', file=sys.stderr)
                return EXIT_NODE_FAILED
            except Exception as exc:
                print(f'sage: node {spec.name} failed to start: {type(exc).__name__}: {exc}',
                      file=sys.stderr)
                return EXIT_NODE_FAILED
            nodes.append(node)
            if spec.lifecycle:
                try:
                    _autostart(node, spec.name)
                except RuntimeError as exc:
                    print(f'sage: {exc}', file=sys.stderr)
                    return EXIT_NODE_FAILED
        print(f'sage: running {len(nodes)} node(s) in one process: '
              f'{", ".join(s.name for s in specs) or "none"}', flush=True)
        own = [n for n in nodes if getattr(type(n), 'own_executor', False)]   # the safety node
        shared = [n for n in nodes if n not in own]
        for group in (shared, *[[n] for n in own]):
            if group:
                executors.append(make_executor(group))
                spinners.append(threading.Thread(target=spin, args=(executors[-1],),
                                                 daemon=True))
                spinners[-1].start()
        line = live_line(namespace, stop) if live else None
        if duration is not None:
            timer = threading.Timer(duration, stop.set)
            timer.daemon = True                  # an earlier stop must not wait for it
            timer.start()
        while not stop.wait(0.25) and rclpy.ok():     # signal handlers run here
            pass
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for thread in spinners + ([line] if line else []):
            thread.join(timeout=5.0)
        for executor in executors:
            executor.shutdown(timeout_sec=2.0)
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
    if failures:
        exc = failures[0]
        print(f'sage: a node failed while running: {type(exc).__name__}: {exc}',
              file=sys.stderr)
        code = EXIT_NODE_FAILED
    print(f'sage: stopped (exit {code})', flush=True)
    return code


def _autostart(node, name: str) -> None:
    from rclpy.lifecycle import TransitionCallbackReturn

    for step in (node.trigger_configure, node.trigger_activate):
        result = step()
        if result != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError(f'lifecycle node {name}: {step.__name__} returned {result}')


# ------------------------------------------------------------- one process per node

def executable_path(spec: graph.NodeSpec) -> str:
    """Find lib/<package>/<executable> on AMENT_PREFIX_PATH."""
    searched = []
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        path = os.path.join(prefix, 'lib', spec.package, spec.executable)
        searched.append(path)
        if prefix and os.access(path, os.X_OK):
            return path
    raise graph.ConfigError(f'executable {spec.executable} of {spec.package} not found; '
                            f'looked in {searched or "an empty AMENT_PREFIX_PATH"}. '
                            f'Run scripts/setup.sh and source scripts/env.sh')


# Supervision of node processes: a node that dies after it was up is restarted after a
# back-off that doubles up to MAX_BACKOFF_S; CRASH_LOOP restarts within CRASH_WINDOW_S
# are reported as a crash loop. A node that fails before it was ever up UP_AFTER_S, or
# exits 2 (refused its parameters), stops the graph: a restart would not help.
UP_AFTER_S, MAX_BACKOFF_S, CRASH_LOOP, CRASH_WINDOW_S = 10.0, 30.0, 5, 120.0


def run_processes(specs, params_file, namespace, sim_time, source, log_level,
                  duration: float | None, respawn_delay: float | None,
                  live: bool = True) -> int:
    """Start one process per node and supervise them (see UP_AFTER_S and the others).

    ``respawn_delay``: the first back-off in seconds; None stops the graph when a node
    dies. A respawned lifecycle node is configured and activated again.
    """
    cmds = {s.name: s.prefix + [executable_path(s)]
            + ros_args(s, params_file, namespace, sim_time, source)
            + ['--log-level', log_level] for s in specs}
    lifecycle = {s.name for s in specs if s.lifecycle}
    procs = {name: subprocess.Popen(cmds[name]) for name in cmds}
    started = {name: time.monotonic() for name in cmds}
    ever_up: set = set()
    restarts: dict = {name: [] for name in cmds}
    due: dict = {}                          # name -> when to restart it
    print(f'sage: running {len(procs)} node process(es): {", ".join(procs) or "none"}',
          flush=True)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    deadline = None if duration is None else time.monotonic() + duration
    code = 0
    line = live_line(namespace, stopping) if live else None
    for name in lifecycle:
        try:
            _autostart_remote(name, namespace, should_stop=stopping.is_set)
        except RuntimeError as exc:
            print(f'sage: {exc}; stopping the graph', file=sys.stderr, flush=True)
            code = EXIT_NODE_FAILED
            stopping.set()
    while not stopping.is_set() and (deadline is None or time.monotonic() < deadline):
        now = time.monotonic()
        for name, proc in list(procs.items()):
            if name in due:
                if now >= due[name]:
                    del due[name]
                    procs[name], started[name] = subprocess.Popen(cmds[name]), now
                    if name in lifecycle:        # however it died, bring it up again
                        threading.Thread(target=_restart_lifecycle, daemon=True,
                                         args=(name, namespace)).start()
                continue
            rc = proc.poll()
            if rc is None:
                if now - started[name] >= UP_AFTER_S:
                    ever_up.add(name)
                continue
            if respawn_delay is None or rc == EXIT_CONFIG or name not in ever_up:
                why = ('refused its parameters' if rc == EXIT_CONFIG else
                       'failed before it was up' if name not in ever_up else 'died')
                print(f'sage: node {name} exited with code {rc} ({why}); stopping the graph',
                      file=sys.stderr, flush=True)
                code = EXIT_NODE_FAILED
                stopping.set()
                break
            recent = [t for t in restarts[name] if now - t < CRASH_WINDOW_S] + [now]
            restarts[name] = recent
            delay = min(MAX_BACKOFF_S, respawn_delay * 2 ** (len(recent) - 1))
            loop = (f'; crash loop: {len(recent)} restarts in {CRASH_WINDOW_S:.0f} s, see '
                    f'its log' if len(recent) >= CRASH_LOOP else '')
            print(f'sage: node {name} exited with code {rc}; respawning in {delay:.1f} s'
                  f'{loop}', file=sys.stderr, flush=True)
            due[name] = now + delay
        stopping.wait(0.2)
    stopping.set()
    if line is not None:
        line.join(timeout=5.0)
    for name, proc in procs.items():
        if name not in due and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for name, proc in procs.items():
        if name in due:
            continue
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
            print(f'sage: node {name} did not stop within 10 s and was killed',
                  file=sys.stderr)
        if rc not in (0, -signal.SIGINT) and code == 0:
            print(f'sage: node {name} exited with code {rc} while stopping', file=sys.stderr)
            code = EXIT_NODE_FAILED
    print(f'sage: stopped (exit {code})', flush=True)
    return code


def _restart_lifecycle(name: str, namespace: str) -> None:
    try:
        _autostart_remote(name, namespace)
        print(f'sage: lifecycle node {name} configured and activated again', flush=True)
    except RuntimeError as exc:
        print(f'sage: {exc}', file=sys.stderr, flush=True)


def _autostart_remote(name: str, namespace: str, timeout: float = 60.0,
                      should_stop=lambda: False) -> None:
    """Bring a lifecycle node in another process to active via its services.

    Asks its state and steps it up (configure, activate) until active or ``timeout``:
    after a respawn the dead process's services may still be discovered for a while,
    so a call that gets no answer is retried, never waited on forever.
    """
    import rclpy
    import rclpy.executors
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    context = rclpy.Context()       # its own: it may run beside another starter
    rclpy.init(context=context, signal_handler_options=_no_signals())
    node = rclpy.create_node('sage_lifecycle_starter', context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    base = f'{namespace}/{name}'
    try:
        get = node.create_client(GetState, f'{base}/get_state')
        change = node.create_client(ChangeState, f'{base}/change_state')
        steps = {State.PRIMARY_STATE_UNCONFIGURED: Transition.TRANSITION_CONFIGURE,
                 State.PRIMARY_STATE_INACTIVE: Transition.TRANSITION_ACTIVATE}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not should_stop():
            if not get.wait_for_service(timeout_sec=1.0):
                continue
            future = get.call_async(GetState.Request())
            executor.spin_until_future_complete(future, timeout_sec=5.0)
            if not future.done():
                continue                      # a dead process's service: ask again
            state = future.result().current_state.id
            if state == State.PRIMARY_STATE_ACTIVE:
                return
            if state not in steps:
                raise RuntimeError(f'lifecycle node {name}: cannot configure it from state '
                                   f'{future.result().current_state.label!r}')
            future = change.call_async(ChangeState.Request(
                transition=Transition(id=steps[state])))
            executor.spin_until_future_complete(future, timeout_sec=30.0)
            if future.done() and not future.result().success:
                what = 'configure' if state == State.PRIMARY_STATE_UNCONFIGURED else 'activate'
                raise RuntimeError(f'lifecycle node {name}: {what} failed (see its log)')
        if should_stop():
            return
        raise RuntimeError(f'lifecycle node {name}: not active after {timeout:.0f} s')
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def _no_signals():
    from rclpy.signals import SignalHandlerOptions
    return SignalHandlerOptions.NO


# ------------------------------------------------------------------- commands

def cmd_run(args) -> int:
    """Start the SAGE graph."""
    try:
        params_file, specs, namespace, sim_time = resolve_graph(args)
        if args.list:
            for spec in specs:
                print(f'{spec.name:14s} {spec.package}/{spec.executable:18s} {spec.description}')
            return 0
        if args.processes:
            return run_processes(specs, params_file, namespace, sim_time, args.source,
                                 args.log_level, args.duration,
                                 None if args.no_respawn else args.respawn_delay,
                                 not args.no_status_line)
        return run_in_process(specs, params_file, namespace, sim_time, args.source,
                              args.log_level, args.duration, not args.no_status_line)
    except graph.ConfigError as exc:
        print(f'sage: {exc}', file=sys.stderr)
        return EXIT_CONFIG


def cmd_activate(args) -> int:
    """Bring a lifecycle node to active (see _autostart_remote)."""
    try:
        _autostart_remote(args.node, graph.check_namespace(args.namespace), args.timeout)
    except RuntimeError as exc:
        print(f'sage: {exc}', file=sys.stderr)
        return EXIT_NODE_FAILED
    print(f'sage: lifecycle node {args.node} is active', flush=True)
    return 0


def cmd_status(args) -> int:
    """Print the nodes, topics and latest diagnostics of a running graph."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray

    rclpy.init()
    node = rclpy.create_node('sage_status')
    latest = {}
    node.create_subscription(DiagnosticArray, 'diagnostics',
                             lambda m: latest.update({s.name: s for s in m.status}), 10)
    end = time.monotonic() + args.wait
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    names = sorted(f'{ns.rstrip("/")}/{n}' for n, ns in node.get_node_names_and_namespaces()
                   if n != 'sage_status')
    topics = sorted(node.get_topic_names_and_types())
    node.destroy_node()
    rclpy.shutdown()
    levels = {0: 'OK', 1: 'WARN', 2: 'ERROR', 3: 'STALE'}
    print(f'nodes ({len(names)}):')
    for name in names:
        print(f'  {name}')
    print(f'topics ({len(topics)}):')
    for name, types in topics:
        print(f'  {name:40s} {", ".join(types)}')
    print(f'diagnostics ({len(latest)}):')
    for name, status in sorted(latest.items()):
        level = levels.get(int.from_bytes(status.level, 'little')
                           if isinstance(status.level, bytes) else status.level, '?')
        print(f'  {level:5s} {name}: {status.message}')
    return 0 if names else 1


def cmd_sleep(args) -> int:
    """Ask the running sleep node for one consolidation cycle, with a progress bar."""
    import rclpy
    from rclpy.action import ActionClient
    from sage_msgs.action import Sleep
    from sage_ros.goals import GoalRejected, ServerLost, run_goal

    rclpy.init()
    node = rclpy.create_node('sage_sleep_client')
    name = f'{graph.check_namespace(args.namespace)}/sage/sleep'
    client = ActionClient(node, Sleep, name)
    try:
        if not client.wait_for_server(timeout_sec=args.wait):
            print(f'sage: no sleep node answers on {name}; is `sage run` running with the '
                  f'sleep node active?', file=sys.stderr)
            return EXIT_NODE_FAILED
        goal = Sleep.Goal(max_duration_s=args.max_duration, targets=args.targets or [],
                          max_experiences=args.max_experiences)
        try:
            result = run_goal(node, client, goal, name, _bar)
        except KeyboardInterrupt:
            print('\nsage: sleep cancelled', file=sys.stderr)
            return 130
        except GoalRejected as exc:
            print(f'\nsage: {exc}: already sleeping, unknown targets, or the cycle failed',
                  file=sys.stderr)
            return EXIT_NODE_FAILED
        except ServerLost as exc:
            print(f'\nsage: {exc}', file=sys.stderr)
            return EXIT_NODE_FAILED
        print()
        print(result.message)
        for name_, before, after in zip(result.metric_names, result.metrics_before,
                                        result.metrics_after):
            print(f'  {name_:24s} {before:10.4f} -> {after:10.4f}')
        return 0
    finally:
        client.destroy()
        node.destroy_node()
        rclpy.try_shutdown()


def cmd_think(args) -> int:
    """Ask a running cognition node to think about an instruction; stream its text."""
    import rclpy
    from rclpy.action import ActionClient, get_action_names_and_types
    from sage_msgs.action import Think
    from sage_ros.goals import GoalRejected, ServerLost, run_goal

    rclpy.init()
    node = rclpy.create_node('sage_think_client')
    prefix = f'{graph.check_namespace(args.namespace)}/sage/cognition/'
    client = None
    try:
        name = f'{prefix}{args.name}/think' if args.name else None
        deadline = time.monotonic() + args.wait
        while name is None and time.monotonic() < deadline:   # any node that thinks
            found = sorted(a for a, _ in get_action_names_and_types(node)
                           if a.startswith(prefix) and a.endswith('/think'))
            name = found[0] if found else None
            time.sleep(0.2)
        if name is not None:
            client = ActionClient(node, Think, name)
        if client is None or not client.wait_for_server(
                timeout_sec=max(0.0, deadline - time.monotonic())):
            print(f'sage: no cognition node answers on {name or prefix + "*/think"}; only a '
                  f'node with a language model (backend: local or openai) thinks: see '
                  f'config/sage.yaml', file=sys.stderr)
            return EXIT_NODE_FAILED
        shown = {'n': 0}

        def stream(feedback):
            print(feedback.partial_text[shown['n']:], end='', flush=True)
            shown['n'] = len(feedback.partial_text)

        goal = Think.Goal(instruction=args.instruction, context=args.context or '',
                          max_tokens=args.max_tokens)
        try:
            result = run_goal(node, client, goal, name, stream)
        except KeyboardInterrupt:
            print('\nsage: thought cancelled', file=sys.stderr)
            return 130
        except (GoalRejected, ServerLost) as exc:
            print(f'\nsage: {exc}', file=sys.stderr)
            return EXIT_NODE_FAILED
        print(f'\n[{name}: trust {result.trust:.2f}, {result.latency_s:.1f} s] {result.text}')
        return 0
    finally:
        if client is not None:
            client.destroy()
        node.destroy_node()
        rclpy.try_shutdown()


def _bar(feedback) -> None:
    filled = int(30 * max(0.0, min(1.0, feedback.progress)))
    print(f'\r[{"#" * filled}{"." * (30 - filled)}] {100 * feedback.progress:5.1f}% '
          f'{feedback.phase:9s} {feedback.message[:60]:60s}', end='', flush=True)


def _resolve(topic: str, namespace: str) -> str:
    return topic if topic.startswith('/') else f'{namespace.rstrip("/")}/{topic}'


def cmd_record(args) -> int:
    """Record topics of a running graph into a rosbag2 until Ctrl-C or --duration."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sage_common.paths import resolve_path
    from sage_ros.common import qos_from_name
    from sage_interop.bag import BagError, DEFAULT_TOPICS, message_class, qos_name, Recorder

    path = resolve_path(args.output or os.path.join(
        'recordings', time.strftime('sage_%Y%m%d_%H%M%S')))
    try:
        recorder = Recorder(path, args.storage)
    except BagError as exc:
        print(f'sage: {exc}', file=sys.stderr)
        return EXIT_CONFIG
    wanted = [_resolve(t, args.namespace or '/') for t in (args.topics or DEFAULT_TOPICS)]
    rclpy.init()
    node = rclpy.create_node('sage_recorder')
    subscribed: set = set()

    def subscribe_new() -> None:      # topics may appear after the recorder starts
        for topic, types in node.get_topic_names_and_types():
            if topic in wanted and topic not in subscribed and types:
                recorder.add_topic(topic, types[0])
                node.create_subscription(
                    message_class(types[0]), topic, lambda data, t=topic: recorder.write(
                        t, data, node.get_clock().now().nanoseconds),
                    qos_from_name('LATCHED') if qos_name(topic) == 'LATCHED'
                    else qos_profile_sensor_data, raw=True)
                subscribed.add(topic)
    print(f'sage: recording to {path} ({args.storage}); Ctrl-C stops', flush=True)
    end = time.monotonic() + args.duration if args.duration else None
    last = 0.0
    try:
        while rclpy.ok() and (end is None or time.monotonic() < end):
            if time.monotonic() - last > 1.0:
                subscribe_new()
                last = time.monotonic()
                total = sum(recorder.counts.values())
                print(f'\r  {len(subscribed)}/{len(wanted)} topics, {total} messages',
                      end='', flush=True)
            rclpy.spin_once(node, timeout_sec=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        recorder.close()
        node.destroy_node()
        rclpy.try_shutdown()
    print(f'\nsage: wrote {sum(recorder.counts.values())} messages on {len(subscribed)} '
          f'topics to {path}')
    return 0


class GraphGone(RuntimeError):
    """Every subscriber of a replay has left: the graph it fed stopped or crashed."""


def cmd_replay(args) -> int:
    """Play a rosbag2 into the graph with its timing, driving /clock."""
    import rclpy
    from rclpy.qos import QoSProfile
    from rosgraph_msgs.msg import Clock
    from sage_ros.common import qos_from_name
    from sage_interop.bag import BagError, message_class, play, qos_name, read, topics

    if args.rate <= 0 or args.wait < 0 or args.lost_after <= 0:
        print('sage: --rate and --lost-after must be > 0, --wait >= 0', file=sys.stderr)
        return EXIT_CONFIG
    try:
        next(read(args.bag, args.topics))            # readable, and holds the topics
        types = topics(args.bag, args.topics)
    except (BagError, StopIteration) as exc:
        print(f'sage: cannot replay {args.bag}: {exc or "the bag is empty"}', file=sys.stderr)
        return EXIT_CONFIG
    rclpy.init()
    node = rclpy.create_node('sage_replay')
    try:
        pubs = {t: node.create_publisher(message_class(m), t, qos_from_name(qos_name(t)))
                for t, m in types.items()}
    except BagError as exc:
        print(f'sage: cannot replay {args.bag}: {exc}', file=sys.stderr)
        node.destroy_node()
        rclpy.try_shutdown()
        return EXIT_NODE_FAILED
    clock_pub = node.create_publisher(Clock, '/clock', QoSProfile(depth=10)) \
        if args.clock else None
    # the first messages would be lost before discovery: wait until the set of
    # subscribed topics stops growing (or --wait runs out)
    deadline, matched, since = time.monotonic() + args.wait, -1, time.monotonic()
    while time.monotonic() < deadline:
        n = sum(p.get_subscription_count() > 0 for p in pubs.values())
        if n != matched:
            matched, since = n, time.monotonic()
        elif n and time.monotonic() - since > 0.5:
            break
        time.sleep(0.05)
    print(f'sage: replaying {args.bag} at {args.rate}x' + (' (loop)' if args.loop else '') +
          f'; {max(matched, 0)}/{len(pubs)} topics have subscribers', flush=True)
    progress = {'sent': 0, 'shown': 0.0, 'heard': time.monotonic()}

    def publish(topic, msgtype, data):
        pubs[topic].publish(data)
        progress['sent'] += 1
        now = time.monotonic()
        if now - progress['shown'] > 1.0:
            progress['shown'] = now
            print(f'\r  {progress["sent"]} messages', end='', flush=True)
            # a graph that listened and is gone (crashed, stopped) hears nothing more
            if matched <= 0 or any(p.get_subscription_count() for p in pubs.values()):
                progress['heard'] = now
            elif now - progress['heard'] > args.lost_after:
                raise GraphGone(f'every subscriber left {args.lost_after:g} s ago (the '
                                f'graph stopped or crashed); check `sage status`')

    def clock(stamp_ns):
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(int(stamp_ns), 1_000_000_000)
        clock_pub.publish(msg)

    try:
        sent = play(args.bag, publish, clock if clock_pub else None, args.rate, args.loop,
                    args.topics)
    except KeyboardInterrupt:
        sent = None
    except (BagError, GraphGone) as exc:
        print(f'\nsage: {exc}', file=sys.stderr)
        return EXIT_NODE_FAILED
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    if sent is not None:
        print(f'\nsage: replayed {sent} messages')
    return 0


def cmd_init(args) -> int:
    """Install the shipped base models into $SAGE_HOME unless models are already there."""
    from sage_coherence.runtime import install_base
    from sage_common.paths import resolve_path
    root = resolve_path(args.model_dir)
    ckpt = install_base(root)
    if ckpt is None:
        print(f'sage: {root}/coherence already holds a model; nothing to do')
    else:
        score = ckpt.meta.get('metrics', {}).get('morning_success_cpu')
        print(f'installed the base coherence model as v{ckpt.version:04d} in {root}/coherence'
              + (f' (morning-suite success {score:.2f})' if score is not None else ''))
    return 0


def cmd_train(args) -> int:
    """Train the coherence model from a teacher's demonstrations (DAgger) and commit it."""
    import torch
    from sage_common.checkpoints import CheckpointStore
    from sage_common.paths import resolve_path
    from sage_sleep.learn import bootstrap

    if args.workers > 1 and args.threads > 1:
        print('sage: --workers > 1 needs --threads 1 (OpenMP threads in the parent hang '
              'forked workers)', file=sys.stderr)
        return EXIT_CONFIG
    torch.set_num_threads(args.threads)
    root = resolve_path(args.model_dir)
    store = CheckpointStore(root, 'coherence')
    if store.latest_version() is not None and not (args.force or args.init):
        print(f'sage: {root}/coherence already holds v{store.latest_version()}; '
              f'use --force to train a new version', file=sys.stderr)
        return EXIT_CONFIG
    start = time.monotonic()
    model = None
    if args.init:
        from sage_coherence.runtime import load_runtime, RuntimeRefused
        try:
            model = load_runtime(root).model.train()
        except RuntimeRefused as exc:
            print(f'sage: --init: {exc}', file=sys.stderr)
            return EXIT_CONFIG
    betas = [float(b) for b in args.betas.split(',')] if args.betas else None
    model, data = bootstrap(seeds=range(args.seed, args.seed + args.episodes),
                            rounds=args.rounds, updates=args.updates, seed=args.seed,
                            log=lambda m: print(m, flush=True), workers=args.workers,
                            device=args.device, batch=args.batch, lr=args.lr, betas=betas,
                            model=model, teacher=args.teacher)
    meta = {'config': model.cfg.to_dict(), 'trained_by': 'sage train coherence',
            'args': {k: v for k, v in vars(args).items() if k != 'func'},
            'episodes': len(data), 'train_s': round(time.monotonic() - start, 1)}
    if args.evaluate:
        from sage_coherence.runtime import TorchRuntime
        from sage_sim.evaluate import MORNING, evaluate
        from sage_sleep.agent import CoherencePolicy
        report = evaluate(lambda w: CoherencePolicy(TorchRuntime(model, 'new')), MORNING,
                          lambda i, n: print(f'\rmorning test {i}/{n}', end='', flush=True))
        print(f'\nmorning test: success {report.success_rate:.0%}, '
              f'collisions/episode {report.collisions_per_episode:.1f}')
        meta['metrics'] = {'success': report.success_rate}
    ckpt = store.commit(model.state_dict(), meta)
    print(f'committed coherence v{ckpt.version} at {ckpt.path} '
          f'({time.monotonic() - start:.0f} s)')
    return 0


def _count(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 100000:
        raise argparse.ArgumentTypeError(f'{value} is not a count from 0 to 100000')
    return value


def build_parser() -> argparse.ArgumentParser:
    """Build the `sage` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog='sage', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)

    run = sub.add_parser('run', help='start the SAGE node graph',
                         description='Start the SAGE nodes named in the params file. With no '
                         'hardware, the built-in world is the input. Ctrl-C stops cleanly; '
                         'the exit code is non-zero if a node fails.')
    add_graph_args(run)
    run.add_argument('--processes', action='store_true',
                     help='one process per node (default: all nodes in one process)')
    run.add_argument('--respawn-delay', type=float, default=1.0, metavar='S',
                     help='with --processes: first back-off before restarting a node that '
                          'died (doubles per restart up to 30 s; default 1)')
    run.add_argument('--no-status-line', action='store_true',
                     help='on a terminal, do not print the live line (episode, success, '
                          'trust per modality, plan step, decision latency, memory, sleep)')
    run.add_argument('--no-respawn', action='store_true',
                     help='with --processes: stop the graph when a node dies instead')
    run.add_argument('--only', nargs='+', metavar='NODE', help='start only these nodes')
    run.add_argument('--duration', type=float, default=None, metavar='S',
                     help='stop after S seconds (for demos and tests)')
    run.add_argument('--list', action='store_true', help='list the nodes that would start')
    run.set_defaults(func=cmd_run)

    status = sub.add_parser('status', help='show nodes, topics and diagnostics of a running graph')
    status.add_argument('--wait', type=float, default=2.0, help='seconds to listen (default 2)')
    status.set_defaults(func=cmd_status)

    record = sub.add_parser('record', help='record the running graph into a rosbag2',
                            description='Record topics of a running SAGE graph into a rosbag2 '
                            '(MCAP or sqlite3), readable by `ros2 bag` and the rosbags library.')
    record.add_argument('topics', nargs='*', help='topics (default: sensors, features, '
                        'salience, actions, coherence, diagnostics)')
    record.add_argument('-o', '--output', help='bag directory (default: '
                        '$SAGE_HOME/recordings/sage_<time>; never overwritten)')
    record.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    record.add_argument('--namespace', default='', help='namespace of the graph')
    record.add_argument('--duration', type=float, default=None, metavar='S',
                        help='stop after S seconds (default: Ctrl-C)')
    record.set_defaults(func=cmd_record)

    replay = sub.add_parser('replay', help='play a rosbag2 into the graph',
                            description='Publish the messages of a rosbag2 with their timing '
                            'and drive /clock, for a graph started with '
                            '`sage run --source bag` (use_sim_time).')
    replay.add_argument('bag', help='rosbag2 directory')
    replay.add_argument('topics', nargs='*', help='only these topics (default: all)')
    replay.add_argument('--rate', type=float, default=1.0, help='speed factor (default 1)')
    replay.add_argument('--loop', action='store_true', help='start again at the end')
    replay.add_argument('--no-clock', dest='clock', action='store_false',
                        help='do not publish /clock')
    replay.add_argument('--wait', type=float, default=3.0, metavar='S',
                        help='wait up to S seconds for subscribers before playing (default 3)')
    replay.add_argument('--lost-after', type=float, default=3.0, metavar='S',
                        help='stop with an error when every subscriber has been gone S '
                        'seconds (the graph died; default 3)')
    replay.set_defaults(func=cmd_replay)

    init = sub.add_parser('init', help='install the shipped base models into $SAGE_HOME',
                          description='Commit the base coherence model that ships with SAGE '
                          'as version 1 under $SAGE_HOME/models, unless a model is there.')
    init.add_argument('--model-dir', default='models', help='checkpoint root (relative: '
                      'under $SAGE_HOME)')
    init.set_defaults(func=cmd_init)

    train = sub.add_parser('train', help='train the coherence model (first competence)',
                           description='Collect demonstrations in the built-in world, '
                           'train the coherence model by behaviour cloning with DAgger rounds, '
                           'and commit it as a checkpoint version the coherence node loads.')
    train.add_argument('model', choices=('coherence',), help='what to train')
    train.add_argument('--model-dir', default='models', help='checkpoint root (relative: '
                       'under $SAGE_HOME)')
    train.add_argument('--episodes', type=int, default=60)
    train.add_argument('--rounds', type=int, default=3, help='DAgger rounds')
    train.add_argument('--updates', type=int, default=300, help='optimizer steps per round')
    train.add_argument('--seed', type=int, default=0)
    train.add_argument('--betas', metavar='B1,B2,...', help='DAgger schedule: the chance the '
                       'teacher drives in each round (overrides --rounds; default 1,0.5,0.25...)')
    # sage_sleep.learn.TEACHERS, spelt out: importing it pulls torch into every `sage` call
    train.add_argument('--teacher', choices=('planner', 'operator', 'oracle'), default='planner',
                       help='who labels: the planner reads only the features the model gets '
                            '(the remembered places, default), the operator knows what the '
                            'camera has shown, the oracle the whole map')
    train.add_argument('--init', action='store_true',
                       help='continue from the latest committed version instead of from scratch')
    train.add_argument('--batch', type=int, default=64, help='training windows per update')
    train.add_argument('--lr', type=float, default=2e-3, help='learning rate')
    train.add_argument('--threads', type=int, default=1,
                       help='torch threads (1 is fastest for this small model)')
    train.add_argument('--workers', type=int, default=1,
                       help='processes that roll out episodes in parallel')
    train.add_argument('--device', default='cpu', help='training device: cpu or cuda')
    train.add_argument('--evaluate', action='store_true', help='run the morning test after')
    train.add_argument('--force', action='store_true', help='train even if a model exists')
    train.set_defaults(func=cmd_train)

    hrm = sub.add_parser('hrm', help='train, evaluate and export HRM puzzle models',
                         description='Forwarded to sage_hrm.cli: `sage hrm train --help`.',
                         add_help=False)
    hrm.add_argument('hrm_args', nargs=argparse.REMAINDER)

    sleep = sub.add_parser('sleep', help='sleep now: run one consolidation cycle',
                           description='Ask the running sleep node to consolidate now. Shows '
                           'progress; Ctrl-C cancels (the current model is kept).')
    sleep.add_argument('--namespace', default='')
    sleep.add_argument('--targets', nargs='+', help='models to improve (default: all enabled)')
    sleep.add_argument('--max-duration', type=float, default=0.0, metavar='S',
                       help='wall-time budget in seconds, validation included (default: '
                       'the node\'s train_s per target)')
    sleep.add_argument('--max-experiences', type=int, default=0)
    sleep.add_argument('--wait', type=float, default=10.0,
                       help='seconds to wait for the sleep node')
    sleep.set_defaults(func=cmd_sleep)
    from sage_bringup import life
    days = sub.add_parser('life', help='live days and nights in the graph: do nights help?',
                          description=life.__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    life.add_args(days)
    days.set_defaults(func=life.cmd_life)
    think = sub.add_parser('think', help='ask a cognition node to think about an instruction',
                           description='Send a Think goal to a running cognition node with a '
                           'language model and stream its text; prints the final thought with '
                           'its trust. Ctrl-C cancels. Exits non-zero if the node dies first.')
    think.add_argument('instruction')
    think.add_argument('--name', help='cognition node name (default: the first that thinks)')
    think.add_argument('--context', help='extra context, treated as data')
    think.add_argument('--max-tokens', type=_count, default=0, help='0 = the node\'s default')
    think.add_argument('--namespace', default='')
    think.add_argument('--wait', type=float, default=10.0,
                       help='seconds to wait for a cognition node')
    think.set_defaults(func=cmd_think)
    activate = sub.add_parser('activate', help='bring a lifecycle node to active',
                              description='Configure and activate a lifecycle node (coherence, '
                              'sleep) from whatever state it is in; the launch file runs this on '
                              'every (re)start of one. Asks its state and retries, so a '
                              'respawned node is not missed for the dead one.')
    activate.add_argument('node', help='node name, e.g. coherence')
    activate.add_argument('--namespace', default='')
    activate.add_argument('--timeout', type=float, default=120.0, metavar='S')
    activate.set_defaults(func=cmd_activate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sage` console script."""
    _localhost_only()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['hrm']:        # its own parser, options included
        from sage_hrm.cli import main as hrm_main
        return hrm_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
