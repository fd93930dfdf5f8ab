"""Helpers for tests that run real rclpy graphs (no mocks): spin and collect."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import rclpy
from rclpy.executors import MultiThreadedExecutor


class Graph:
    """An rclpy context with an executor spinning in a thread, plus message collectors.

    Use as a context manager; add nodes under test with ``add(node)`` and
    collect topics with ``collect(type, topic, qos)``.
    """

    def __init__(self, args: list[str] | None = None):
        self.context = rclpy.Context()
        rclpy.init(args=args, context=self.context)
        self.executor = MultiThreadedExecutor(context=self.context)
        self.probe = rclpy.create_node('sage_test_probe', context=self.context)
        self.executor.add_node(self.probe)
        self.messages = defaultdict(list)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # shutdown races end the spin; tests assert on messages
            pass

    def add(self, node):
        """Spin ``node`` (created with ``context=graph.context``) too; return it."""
        self.executor.add_node(node)
        return node

    def collect(self, msg_type, topic: str, qos=10) -> list:
        """Subscribe and return the list that received messages are appended to."""
        self.probe.create_subscription(msg_type, topic, self.messages[topic].append, qos)
        return self.messages[topic]

    def publisher(self, msg_type, topic: str, qos=10):
        """Create a publisher on the probe node."""
        return self.probe.create_publisher(msg_type, topic, qos)

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        """Poll ``predicate`` until True or ``timeout`` seconds pass."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.02)
        return bool(predicate())

    def close(self) -> None:
        """Stop spinning, destroy every node, shut the context down."""
        # shutdown() forgets the executor's nodes: take them first, or they outlive the
        # test (their latched topics leaked into later tests)
        nodes = list(self.executor.get_nodes())
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=5.0)      # no callback may run on a node being destroyed
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
