"""The safety node in a real rclpy graph: limits, slew, e-stop, watchdog, and a decision
process killed with -9 while the robot moves."""

import math
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from ament_index_python.packages import get_package_prefix
from geometry_msgs.msg import TwistStamped
from rclpy.parameter import Parameter
from sage_common.checkpoints import CheckpointStore
from sage_coherence.model import CoherenceConfig, CoherenceModel
from sage_msgs.msg import Feature
from sage_safety.limits import CommandLimiter, Limits
from sage_ros.common import qos_from_name
from sage_safety.safety_node import SafetyNode
from sage_testing.graph import Graph
from std_msgs.msg import Bool

LIMITS = {'max_linear': 0.2, 'max_angular': 0.5, 'max_linear_accel': 100.0,
          'max_angular_accel': 100.0, 'watchdog_s': 0.3, 'rate_hz': 50.0}


def test_limiter_clamps_slews_and_zeroes():
    lim = CommandLimiter(Limits(max_linear=0.5, max_angular=1.0, max_linear_accel=1.0,
                                max_angular_accel=10.0))
    assert lim.update(3.0, -5.0, 0.0, True) == (0.0, 0.0)            # from rest, not a jump
    assert lim.update(3.0, -5.0, 1.0, True) == (0.5, -1.0)            # clamped
    assert lim.update(-0.5, 0.0, 1.1, True)[0] == pytest.approx(0.4)  # slew 1 m/s^2
    assert lim.update(0.3, 0.2, 1.2, False) == (0.0, 0.0)
    assert lim.zeroed_reason == 'stale inputs'
    lim.estop = True
    assert lim.update(0.3, 0.2, 1.3, True) == (0.0, 0.0) and lim.zeroed_reason == 'e-stop'
    lim.estop = False
    assert lim.update(math.nan, 0.0, 1.4, True) == (0.0, 0.0)


def safety(g, **extra):
    return g.add(SafetyNode(context=g.context, parameter_overrides=[
        Parameter(k, value=v) for k, v in {**LIMITS, **extra}.items()]))


def twist(v, w):
    msg = TwistStamped()
    msg.twist.linear.x, msg.twist.angular.z = v, w
    return msg


def is_zero(c):
    return c.twist.linear.x == 0 and c.twist.angular.z == 0


def test_limits_estop_watchdog_and_bad_proposals():
    with Graph() as g:
        node = safety(g)
        cmds = g.collect(TwistStamped, 'cmd_vel')
        raw = g.publisher(TwistStamped, 'sage/cmd_vel_raw')

        def propose(v=3.0, w=-5.0):
            raw.publish(twist(v, w))
            return any(not is_zero(c) for c in cmds[-3:])
        assert g.wait_for(propose, 10), 'proposals should come out as cmd_vel'
        moving = [c for c in cmds if not is_zero(c)]
        assert all(abs(c.twist.linear.x) <= 0.2 + 1e-9 and abs(c.twist.angular.z) <= 0.5 + 1e-9
                   for c in cmds)
        assert moving[-1].twist.linear.x == pytest.approx(0.2)
        assert moving[-1].header.frame_id == 'base_link'
        # proposals stop: zero within the watchdog period, and zero keeps coming
        stopped_at = time.monotonic()
        assert g.wait_for(lambda: cmds and is_zero(cmds[-1]), 5)
        assert time.monotonic() - stopped_at < 0.3 + 0.5      # watchdog + a loaded machine
        n = len(cmds)
        assert g.wait_for(lambda: len(cmds) > n + 5) and all(is_zero(c) for c in cmds[n:])
        assert node.zeroed_reason == 'no command proposed'
        # the e-stop holds zero against fresh proposals, and releases
        estop = g.publisher(Bool, 'sage/estop', qos_from_name('LATCHED'))
        assert g.wait_for(lambda: estop.publish(Bool(data=True)) or node.limiter.estop, 10)
        n = len(cmds)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            propose()
            time.sleep(0.02)
        assert all(is_zero(c) for c in cmds[n:]) and node.zeroed_reason == 'e-stop'
        assert g.wait_for(lambda: estop.publish(Bool(data=False)) or not node.limiter.estop)
        assert g.wait_for(propose, 5)
        # the limits cannot be changed under the running limiter
        assert not node.set_parameters([Parameter('max_linear', value=5.0)])[0].successful
        # a non-finite proposal is refused: zero at once, the node keeps serving
        raw.publish(twist(math.nan, 0.0))
        assert g.wait_for(lambda: node.rejected == 1 and is_zero(cmds[-1]), 5)
        assert g.wait_for(propose, 5)


def _commit_moving_model(root):
    cfg = CoherenceConfig(modalities={'vision': 6, 'imu': 4}, actions=('fast', 'turn'),
                          action_values=((2.0, 0.0), (0.0, 3.0)))     # never "stop"
    torch.manual_seed(0)
    CheckpointStore(str(root), 'coherence').commit(CoherenceModel(cfg).state_dict(),
                                                   {'config': cfg.to_dict()})


def test_kill_9_of_the_decision_process_stops_the_robot_within_the_watchdog(tmp_path):
    _commit_moving_model(tmp_path)
    exe = os.path.join(get_package_prefix('sage_coherence'), 'lib', 'sage_coherence',
                       'coherence_node')
    log = open(tmp_path / 'coherence.log', 'w')
    proc = subprocess.Popen([exe, '--ros-args', '-p', f'model_dir:={tmp_path}',
                             '-p', "modalities:=['vision','imu']", '-p', 'rate_hz:=20.0',
                             '-p', 'backend:=torch'], stdout=log, stderr=subprocess.STDOUT)
    try:
        with Graph() as g:
            node = safety(g)
            cmds = g.collect(TwistStamped, 'cmd_vel')
            up = subprocess.run(['sage', 'activate', 'coherence', '--timeout', '60'],
                                capture_output=True, text=True, timeout=90)
            assert up.returncode == 0 and 'is active' in up.stdout, up.stderr
            pubs = {m: g.publisher(Feature, f'sage/features/{m}') for m in ('vision', 'imu')}
            rng = np.random.default_rng(0)

            def feed():
                for m, pub in pubs.items():
                    msg = Feature(modality=m, trust=0.9, data=rng.normal(
                        size=6 if m == 'vision' else 4).astype(np.float32).tolist())
                    msg.header.stamp = g.probe.get_clock().now().to_msg()
                    pub.publish(msg)
                return node.proposals > 5 and not is_zero(cmds[-1])
            assert g.wait_for(feed, 30), 'the robot should be moving'
            proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            assert g.wait_for(lambda: feed() is None or is_zero(cmds[-1]), 5)
            stop_s = time.monotonic() - killed
            # watchdog 0.3 s + one 20 ms check; the rest is room for a loaded CI machine
            assert stop_s < 0.3 + 0.7, f'cmd_vel went to zero {stop_s:.2f} s after the kill'
            n = len(cmds)
            assert g.wait_for(lambda: len(cmds) > n + 5) and all(is_zero(c) for c in cmds[n:])
    finally:
        proc.kill()
        proc.wait()
