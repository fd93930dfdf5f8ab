"""The sleep node in a real rclpy graph: lifecycle, the Sleep action, status, announcements."""

import torch
from lifecycle_msgs.msg import State
from rclpy.action import ActionClient
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sage_common.checkpoints import CheckpointStore
from sage_coherence.model import CoherenceModel
from sage_testing.graph import Graph
from sage_memory.store import ExperienceStore
from sage_msgs.action import Sleep
from sage_msgs.msg import Checkpoint, SleepStatus
from sage_sleep.learn import default_config, record_day
from sage_sleep.sleep_node import SleepNode

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def params(tmp_path, **extra):
    base = {'model_dir': str(tmp_path / 'models'), 'store_path': str(tmp_path / 'exp.db'),
            'validation_episodes': 1, 'regression_episodes': 1, 'train_s': 5.0,
            'idle_after_s': 3600.0, 'night_start': '00:00', 'night_end': '00:00'}
    base.update(extra)
    return [Parameter(k, value=v) for k, v in base.items()]


def untrained_model_and_empty_store(tmp_path) -> None:
    cfg = default_config()
    CheckpointStore(str(tmp_path / 'models'), 'coherence').commit(
        CoherenceModel(cfg).state_dict(), {'config': cfg.to_dict()})
    ExperienceStore(str(tmp_path / 'exp.db'), cfg.modalities).close()


def test_configure_fails_clearly_without_a_base_model(tmp_path):
    with Graph() as g:
        node = g.add(SleepNode(context=g.context, parameter_overrides=params(tmp_path)))
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node._state_machine.current_state[1] == 'unconfigured'


def test_sleep_action_runs_a_cycle_with_progress(tmp_path):
    torch.manual_seed(0)
    cfg = default_config()
    model = CoherenceModel(cfg)
    CheckpointStore(str(tmp_path / 'models'), 'coherence').commit(
        model.state_dict(), {'config': cfg.to_dict()})
    store = ExperienceStore(str(tmp_path / 'exp.db'), cfg.modalities)
    from sage_sim.world import WorldConfig
    record_day(model, range(400, 406), store, world_config=WorldConfig(time_limit_s=8.0))
    store.close()
    with Graph() as g:
        status = g.collect(SleepStatus, 'sage/sleep/status')
        announced = g.collect(Checkpoint, 'sage/checkpoint', LATCHED)
        node = g.add(SleepNode(context=g.context, parameter_overrides=params(tmp_path)))
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_ACTIVE
        client = ActionClient(g.probe, Sleep, 'sage/sleep')
        assert client.wait_for_server(timeout_sec=10)
        feedback = []
        send = client.send_goal_async(Sleep.Goal(max_duration_s=60.0),
                                      feedback_callback=lambda m: feedback.append(m.feedback))
        assert g.wait_for(send.done, 10) and send.result().accepted
        result = send.result().get_result_async()
        assert g.wait_for(result.done, 240), 'sleep cycle did not finish'
        res = result.result().result
        assert 'coherence' in res.message
        assert {'success', 'validation_success', 'heldout_accuracy'} <= set(res.metric_names)
        phases = [s.phase for s in status]
        assert 'select' in phases and 'train' in phases and 'validate' in phases
        assert phases[-1] == 'done' and feedback
        progress = [s.progress for s in status]
        assert progress == sorted(progress)
        versions = CheckpointStore(str(tmp_path / 'models'), 'coherence').versions()
        if res.committed:
            assert versions == [1, 2]
            assert g.wait_for(lambda: announced) and announced[-1].version == 2
        else:
            assert versions == [1] and 'rolled back' in res.message
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS


def test_the_night_window_follows_the_node_clock(tmp_path):
    """Under sim time the night comes when /clock says so, not the wall clock."""
    import datetime as dt
    from rosgraph_msgs.msg import Clock
    untrained_model_and_empty_store(tmp_path)
    with Graph() as g:
        status = g.collect(SleepStatus, 'sage/sleep/status')
        clock = g.publisher(Clock, '/clock', 10)
        node = g.add(SleepNode(context=g.context, parameter_overrides=params(
            tmp_path, night_start='01:00', night_end='05:00', min_interval_s=0.0) + [
            Parameter('use_sim_time', value=True)]))

        seconds = [0]

        def tick(day, hour):                         # local time, as the node reads it
            seconds[0] += 1                          # a second more each time: timers run
            msg = Clock()
            msg.clock.sec = int(dt.datetime(1970, 1, day, hour, 0).timestamp()) + seconds[0]
            clock.publish(msg)
            g.wait_for(lambda: False, 0.1)
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        for _ in range(30):                          # evening on the sim clock: awake
            tick(1, 22)
        assert not any(s.trigger == 'night' for s in status) and not node.busy()

        def night():
            tick(2, 2)
            return any(s.trigger == 'night' for s in status)
        assert g.wait_for(night, 30), [(s.trigger, s.phase, s.message) for s in status]
        node.trigger_deactivate()


def test_the_days_last_salience_does_not_wake_a_starting_sleep(tmp_path):
    """Salience right after a cycle starts (the day's last steps still being scored) is not
    the robot waking up; salience after yield_grace_s is, and the sleep yields."""
    import threading
    import time
    from sage_msgs.msg import Salience
    untrained_model_and_empty_store(tmp_path)
    with Graph() as g:
        salience = g.publisher(Salience, 'sage/salience')
        node = g.add(SleepNode(context=g.context, parameter_overrides=params(
            tmp_path, yield_grace_s=1.0)))
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        asleep = threading.Event()          # a cycle that runs until it is told to stop
        node._worker = threading.Thread(target=lambda: asleep.wait(30) or node._stop.wait(30))
        node._stop.clear()
        node._sleep_started_s = node._now_s()
        node._worker.start()
        start = time.monotonic()
        while time.monotonic() - start < 0.5:     # inside the grace: the day's last steps
            salience.publish(Salience(total=1.0))
            g.wait_for(lambda: False, 0.05)
        assert not node._stop.is_set()
        g.wait_for(lambda: time.monotonic() - start > 1.2, 5)

        def woken():
            salience.publish(Salience(total=1.0))
            return node._stop.is_set()
        assert g.wait_for(woken, 5)
        asleep.set()
        node._worker.join(5)
        node.trigger_deactivate()
