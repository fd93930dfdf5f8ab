"""The coherence node in a real rclpy graph: limits, watchdog, e-stop, hot reload, refusals."""

import shutil
import time

import numpy as np
import pytest
import torch
from geometry_msgs.msg import TwistStamped
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sage_common.checkpoints import CheckpointStore
from sage_coherence.model import CoherenceConfig, CoherenceModel
from sage_coherence.coherence_node import CoherenceNode
from sage_ros.common import ParameterError
from sage_testing.graph import Graph
from sage_msgs.msg import Checkpoint, Coherence, Feature

CFG = CoherenceConfig(modalities={'vision': 6, 'imu': 4}, actions=('fast', 'turn'),
                      action_values=((2.0, 0.0), (0.0, 3.0)))
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def commit(root, seed):
    torch.manual_seed(seed)
    return CheckpointStore(str(root), 'coherence').commit(
        CoherenceModel(CFG).state_dict(), {'config': CFG.to_dict()})


def node(g, root, activate=True, **extra):
    params = {'modalities': ['vision', 'imu'], 'model_dir': str(root), 'rate_hz': 20.0,
              'watchdog_s': 0.3, **extra}
    n = g.add(CoherenceNode(context=g.context, parameter_overrides=[
        Parameter(k, value=v) for k, v in params.items()]))
    if activate:
        assert n.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert n.trigger_activate() == TransitionCallbackReturn.SUCCESS
    return n


def feeder(g, modalities=('vision', 'imu')):
    pubs = {m: g.publisher(Feature, f'sage/features/{m}') for m in modalities}
    rng = np.random.default_rng(0)

    def feed():
        for m, pub in pubs.items():
            msg = Feature(modality=m, trust=0.9,
                          data=rng.normal(size=CFG.modalities[m]).astype(np.float32).tolist())
            msg.header.stamp = g.probe.get_clock().now().to_msg()
            pub.publish(msg)
    return feed


def test_configure_fails_without_a_model_and_says_what_to_do(tmp_path, capfd):
    with Graph() as g:
        n = node(g, tmp_path / 'empty', activate=False)
        assert n.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert 'sage init' in capfd.readouterr().err


def test_proposes_zero_on_stale_inputs_and_when_deactivated(tmp_path):
    commit(tmp_path, 0)
    with Graph() as g:
        n_ = node(g, tmp_path)
        cmds = g.collect(TwistStamped, 'sage/cmd_vel_raw')
        coh = g.collect(Coherence, 'sage/coherence')
        feed = feeder(g)
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            feed()
            time.sleep(0.02)
        moving = [c for c in cmds if c.twist.linear.x or c.twist.angular.z]
        assert moving, 'fresh features should propose motion'
        proposed = {(c.twist.linear.x, c.twist.angular.z) for c in moving}
        assert proposed <= {(2.0, 0.0), (0.0, 3.0)}     # unlimited: the safety node limits
        assert coh and list(coh[-1].modalities) == ['vision', 'imu']
        assert all(0 <= t <= 1 for t in coh[-1].trust_used) and coh[-1].act_steps >= 1

        def stopped():
            return cmds[-1].twist.linear.x == 0 and cmds[-1].twist.angular.z == 0
        # inputs stop: zero is proposed (and kept); a zero the model chose itself while
        # its inputs were still fresh does not count
        assert g.wait_for(lambda: n_.stale_reason == 'stale inputs' and stopped(), 5)
        n = len(cmds)
        assert g.wait_for(lambda: len(cmds) > n + 3) and stopped()
        # deactivated: one zero proposal, then silence even with fresh features
        assert n_.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        n = len(coh)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            feed()
            time.sleep(0.02)
        assert stopped() and len(coh) == n


def test_missing_modality_gets_zero_trust(tmp_path):
    commit(tmp_path, 0)
    with Graph() as g:
        node(g, tmp_path)
        coh = g.collect(Coherence, 'sage/coherence')
        feed = feeder(g, modalities=('vision',))
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            feed()
            time.sleep(0.02)
        assert coh[-1].trust_in[1] == 0.0 and coh[-1].trust_in[0] > 0.8


def test_hot_reload_under_load_and_refusal(tmp_path):
    v1 = commit(tmp_path, 0)
    with Graph() as g:
        n = node(g, tmp_path)
        coh = g.collect(Coherence, 'sage/coherence')
        announce = g.publisher(Checkpoint, 'sage/checkpoint', LATCHED)
        feed = feeder(g)

        def run(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                feed()
                time.sleep(0.01)
        run(0.5)
        assert g.wait_for(lambda: feed() or coh, 10), 'no coherence output'
        v2 = commit(tmp_path, 1)
        run(1.0)    # committing a checkpoint in this process is not the node's doing
        t_announce = g.probe.get_clock().now().nanoseconds * 1e-9
        announce.publish(Checkpoint(model='coherence', path=v2.path, version=v2.version,
                                    sha256=v2.sha256))
        end = time.monotonic() + 15.0
        while time.monotonic() < end and coh[-1].model_version != 'v0002':
            run(0.2)
        assert coh[-1].model_version == 'v0002'

        def cycles_after_announce():
            feed()
            return sum(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 >= t_announce
                       for m in coh) > 5
        # the reload runs off the executor: cycles go on while and after it loads (a slow,
        # shared machine may pause them a moment, so wait a little for the count)
        assert g.wait_for(cycles_after_announce, 5), 'cycles stopped after the reload'
        assert coh[-1].model_version == 'v0002'
        # a superseded announcement (a latched one re-delivered after a respawn) is ignored
        announce.publish(Checkpoint(model='coherence', path=v1.path, version=v1.version,
                                    sha256=v1.sha256))
        run(1.0)
        assert coh[-1].model_version == 'v0002' and n._pending is None
        announce.publish(Checkpoint(model='coherence', path=v2.path, version=2,
                                    sha256='0' * 64))
        # the refusal comes from the reload thread: wait for it, cycles going on meanwhile
        assert g.wait_for(lambda: feed() or 'refused' in n.diag.values, 10), 'not refused'
        run(0.5)
        assert coh[-1].model_version == 'v0002' and n.runtime.version == 'v0002'
        # a valid checkpoint from outside model_dir: an announcement is not a command
        elsewhere = tmp_path.parent / f'{tmp_path.name}-elsewhere'
        shutil.copytree(v2.path, elsewhere / 'v0003')
        announce.publish(Checkpoint(model='coherence', path=str(elsewhere / 'v0003'),
                                    version=3, sha256=v2.sha256))
        assert g.wait_for(lambda: feed() or 'not under model_dir' in n.diag.message, 10)
        assert n.runtime.version == 'v0002'


def test_a_trigger_modality_drives_the_cycles(tmp_path):
    commit(tmp_path, 0)
    with Graph() as g:
        with pytest.raises(ParameterError, match='trigger_modality'):
            node(g, tmp_path, trigger_modality='lidar')
        node(g, tmp_path, trigger_modality='vision', rate_hz=0.5)
        coh = g.collect(Coherence, 'sage/coherence')
        feed = feeder(g)
        feed()
        assert g.wait_for(lambda: coh, 10), 'no coherence output'
        n = len(coh)

        def fed_and_cycled():
            feed()
            time.sleep(0.03)
            return len(coh) - n >= 15
        # cycles follow the features; the 0.5 Hz timer alone would give at most 4 in 8 s
        assert g.wait_for(fed_and_cycled, 8), f'{len(coh) - n} cycles'
