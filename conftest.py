"""Test-wide settings: ROS stays on this machine and on a domain of its own, logs stay in
the workspace, and the two tiers (``make test-fast``: ROS-free, ``make test``: all)."""

import os
import random
import re
import sys

import pytest

# Set before any test imports rclpy. Tests isolate themselves on a run-unique domain
# (never the user's own, where a `make run` may be running): CI passes one in.
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
_root = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE',
                      os.path.join(_root, 'config', 'fastdds.xml'))  # dead nodes leave in 3 s
_user_domain = os.environ.get('ROS_DOMAIN_ID', '0')
os.environ['ROS_DOMAIN_ID'] = os.environ.get('SAGE_TEST_DOMAIN_ID') or str(random.choice(
    [d for d in range(1, 101) if str(d) != _user_domain]))
os.environ.setdefault('ROS_HOME', os.path.join(_root, '.ros'))
os.environ.setdefault('ROS_LOG_DIR', os.path.join(os.environ['ROS_HOME'], 'log'))
os.environ.setdefault('SAGE_DATA_DIR', os.path.join(_root, '.cache', 'data'))
os.environ.setdefault('HF_HUB_OFFLINE', '1')
# The models under test are small: one intra-op thread avoids oversubscribing 2 cores.
os.environ.setdefault('OMP_NUM_THREADS', '1')
# Test support (real rclpy graphs, real data fetchers) lives beside the tests, not in a
# production package.
sys.path.insert(0, os.path.join(_root, 'tests'))


# Tier marks. ``ros``: the test module starts ROS (rclpy, a node, a graph, the `sage`
# command in a process); ``make test-fast`` runs the others, minus those marked ``slow``.
_ROS = re.compile(r'\brclpy\b|sage_testing\.(graph|parity|fuzz)|_nodes? import|'
                  r"\[\s*'sage'|ament_index_python")


def pytest_collection_modifyitems(config, items):
    """Mark every test of a module that touches ROS with ``ros``."""
    seen: dict = {}
    for item in items:
        path = str(item.fspath)
        if path not in seen:
            with open(path, encoding='utf-8') as f:
                seen[path] = bool(_ROS.search(f.read()))
        if seen[path]:
            item.add_marker(pytest.mark.ros)
