"""Test-wide settings: ROS stays on this machine, logs stay in the workspace."""

import os
import random

# Set before any test imports rclpy; CI and scripts/test.sh set them too.
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_DOMAIN_ID', str(random.Random(os.getpid()).randint(1, 100)))
_root = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault('ROS_HOME', os.path.join(_root, '.ros'))
os.environ.setdefault('ROS_LOG_DIR', os.path.join(os.environ['ROS_HOME'], 'log'))
os.environ.setdefault('SAGE_DATA_DIR', os.path.join(_root, '.cache', 'data'))
os.environ.setdefault('HF_HUB_OFFLINE', '1')
# The models under test are small: one intra-op thread avoids oversubscribing 2 cores.
os.environ.setdefault('OMP_NUM_THREADS', '1')
