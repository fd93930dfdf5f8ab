"""Helpers for tests that run real rclpy graphs (no mocks): spin and collect."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import rclpy
from rclpy.executors import SingleThreadedExecutor


class Graph:
    """An rclpy context with executors spinning in threads, plus message collectors.

    Use as a context manager; add nodes under test with ``add(node)`` and
    collect topics with ``collect(type, topic, qos)``. Nodes spin as `sage run`
    spins them (sage_ros.common.make_executor): on a single-threaded executor.
    """

    def __init__(self, args: list[str] | None = None):
        self.context = rclpy.Context()
        rclpy.init(args=args, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.probe = rclpy.create_node('sage_test_probe', context=self.context)
        self.executor.add_node(self.probe)
        self.messages = defaultdict(list)
        self._thread = self._start(self.executor)

    def _start(self, executor) -> threading.Thread:
        def spin():
            try:
                executor.spin()
            except Exception:  # shutdown races end the spin; tests assert on messages
                pass
        thread = threading.Thread(target=spin, daemon=True)
        thread.start()
        return thread

    def add(self, node):
        """Spin ``node`` (created with ``context=graph.context``) too; return it."""
        self.executor.add_node(node)
        return node

    def remove(self, node) -> None:
        """Stop spinning ``node`` (it stays alive until destroyed)."""
        self.executor.remove_node(node)

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
        nodes = self.executor.get_nodes()
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=5.0)        # no callback may run on a node being destroyed
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def world_episodes(home, count: int, timeout_s: float, world: dict | None = None,
                   nodes: dict | None = None, progress=None) -> tuple[list[dict], float]:
    """Run ``count`` episodes of the built-in world through `sage run --processes`.

    A fresh ``$SAGE_HOME`` at ``home`` (`sage init` gives it the shipped model), the
    default params with the parameters in ``world`` and ``nodes`` ({node: {name: value}})
    overridden (None: the node does not run); returns each episode's metrics (the world's
    ``metrics_file``) and the wall seconds taken. Raises RuntimeError with the graph's stderr
    if it exits, TimeoutError if
    too slow.
    """
    import json
    import os
    import subprocess

    import yaml
    os.makedirs(home, exist_ok=True)
    env = dict(os.environ, SAGE_HOME=str(home))
    subprocess.run(['sage', 'init'], env=env, check=True, capture_output=True)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    params = yaml.safe_load(open(os.path.join(root, 'config', 'sage.yaml')))
    metrics, err = os.path.join(home, 'episodes.jsonl'), os.path.join(home, 'graph.err')
    world_params = params['world']['ros__parameters']
    world_params.update(day_episodes=0)         # no nights unless asked: seed, seed + 1, ...
    world_params.update(world or {}, episodes=count, metrics_file=metrics)
    for node, overrides in (nodes or {}).items():
        if overrides is None:                   # None: that node does not run
            params.pop(node, None)
        else:
            params[node]['ros__parameters'].update(overrides)
    path = os.path.join(home, 'params.yaml')
    with open(path, 'w') as f:
        yaml.safe_dump(params, f)
    proc = subprocess.Popen(['sage', 'run', '--processes', '--params-file', path], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(err, 'w'))
    start, done = time.monotonic(), []
    try:
        while len(done) < count:
            if time.monotonic() - start > timeout_s:
                raise TimeoutError(f'{len(done)} of {count} episodes in {timeout_s:.0f} s')
            if proc.poll() is not None:
                raise RuntimeError(f'sage run exited {proc.returncode}: ' +
                                   open(err).read()[-3000:])
            time.sleep(1.0)
            if os.path.exists(metrics):
                done = [json.loads(x) for x in open(metrics) if x.strip()]
            if progress:
                progress(len(done), count)
    finally:
        proc.terminate()
        proc.wait(60)
    return done, time.monotonic() - start
