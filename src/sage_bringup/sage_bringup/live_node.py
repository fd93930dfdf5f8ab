"""The live line's node: hears what the graph publishes and prints sage_bringup.status.

It only adapts messages to ``LiveStatus`` calls and prints its line; `sage run` starts it
beside the graph in either mode.
"""

from __future__ import annotations

import sys
import threading
import time


def live_line(namespace: str, stop: threading.Event):
    """On a terminal, print how the robot is doing once a second (sage_bringup.status).

    Its own rclpy context and thread, so it works beside either way of running the graph;
    returns the thread (None when stdout is not a terminal).
    """
    if not sys.stdout.isatty():
        return None

    def run():
        import shutil

        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions
        from sage_msgs.msg import Coherence
        from sage_ros.common import qos_from_name
        from std_msgs.msg import String

        from sage_bringup.status import LiveStatus
        context = rclpy.Context()
        rclpy.init(context=context, args=[],
                   signal_handler_options=SignalHandlerOptions.NO)  # not the main thread
        node = rclpy.create_node('sage_live', namespace=namespace or '/', context=context)
        status = LiveStatus()
        node.create_subscription(String, 'sage/episode', lambda m: status.episode(m.data), 10)
        node.create_subscription(Coherence, 'sage/coherence', lambda m: status.coherence(
            m.modalities, m.trust_used, m.latency_ms), 10)
        node.create_subscription(String, 'sage/cognition/main/plan',
                                 lambda m: status.plan(m.data), qos_from_name('LATCHED'))
        node.create_subscription(DiagnosticArray, 'diagnostics', lambda m: [
            status.diagnostic(s.name, s.message, {v.key: v.value for v in s.values})
            for s in m.status], 10)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        due = time.monotonic() + 1.0
        try:
            while not stop.is_set():
                executor.spin_once(timeout_sec=0.2)
                if time.monotonic() >= due:
                    due += 1.0
                    width = shutil.get_terminal_size().columns
                    sys.stdout.write('\r' + status.line(width) + '\x1b[K')
                    sys.stdout.flush()
        finally:
            sys.stdout.write('\n')
            executor.shutdown()
            node.destroy_node()
            rclpy.try_shutdown(context=context)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
