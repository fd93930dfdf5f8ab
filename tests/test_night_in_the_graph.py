"""In the default graph the robot sleeps at night on sim time and wakes with what it learned.

`sage run --processes` with the default params; the world lives two short days (four
episodes, a night, one more episode), driven by its teacher (a demonstration: the robot
watches). The coherence model in use forgot how to act (its action heads re-initialised):
it reaches no validation target. After the first day the world's clock jumps to 01:00,
inside the sleep node's night window: the sleep node consolidates on its own night
trigger from the day in the experience store (the memory node's, places included),
commits the candidate that beat the forgetful model on validation without getting worse
on the morning suite, and announces it; the coherence node runs it the next morning.
"""

import json
import os
import subprocess

import torch
import yaml
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sage_common.checkpoints import CheckpointStore
from sage_coherence.model import CoherenceConfig, CoherenceModel
from sage_msgs.msg import Checkpoint, Coherence, SleepStatus
from sage_testing.graph import Graph

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def forgetful_model(home) -> int:
    """Commit the shipped model with its action heads re-initialised; return its version."""
    store = CheckpointStore(os.path.join(home, 'models'), 'coherence')
    shipped = store.open()
    model = CoherenceModel(CoherenceConfig.from_dict(shipped.meta['config']))
    model.load_state_dict(store.load_state(shipped))
    torch.manual_seed(2)
    for head in (model.action_head, model.continuous_head):
        head.reset_parameters()
    return store.commit(model.state_dict(), dict(shipped.meta, note='forgot how to act')).version


def test_the_robot_sleeps_at_night_and_drives_the_committed_model_next_morning(tmp_path):
    home = str(tmp_path / 'home')
    env = dict(os.environ, SAGE_HOME=home)
    subprocess.run(['sage', 'init'], env=env, check=True, capture_output=True)
    forgot = forgetful_model(home)
    params = yaml.safe_load(open(os.path.join(ROOT, 'config', 'sage.yaml')))
    metrics = os.path.join(home, 'episodes.jsonl')
    params['world']['ros__parameters'].update(
        seed=5000, day_episodes=4, morning_episodes=0, episodes=5, time_limit_s=12.0,
        command_source='teacher', teacher='operator', metrics_file=metrics)
    params.pop('teacher')                   # the world's operator drives and labels
    params['cognition']['ros__parameters'].update(backend='none')   # plain instructions
    params['sleep']['ros__parameters'].update(
        targets=['coherence'], train_s=100.0, validation_episodes=4, regression_episodes=2)
    path = os.path.join(home, 'params.yaml')
    yaml.safe_dump(params, open(path, 'w'))
    err = open(os.path.join(home, 'graph.err'), 'w')
    graph = subprocess.Popen(['sage', 'run', '--processes', '--params-file', path], env=env,
                             stdout=subprocess.DEVNULL, stderr=err)
    try:
        with Graph() as g:
            status = g.collect(SleepStatus, 'sage/sleep/status', 100)
            announced = g.collect(Checkpoint, 'sage/checkpoint', LATCHED)
            cycles = g.collect(Coherence, 'sage/coherence', 1000)

            def episodes():
                return [json.loads(x) for x in open(metrics)] if os.path.exists(metrics) else []
            assert g.wait_for(lambda: len(episodes()) >= 5 or graph.poll() is not None, 600)
            assert len(episodes()) == 5, \
                (episodes(), [(s.trigger, s.phase, s.message) for s in status][-5:],
                 open(os.path.join(home, 'graph.err')).read()[-3000:])
    finally:
        graph.terminate()
        graph.wait(60)
    days = [(e['day'], e['phase'], e['seed']) for e in episodes()]
    assert days == [(0, 'work', 5000 + k) for k in range(4)] + [(1, 'work', 5004)]
    night = [s for s in status if s.trigger == 'night']
    assert night and night[-1].phase == 'done', [(s.phase, s.message) for s in status]
    assert 'coherence: committed' in night[-1].message, night[-1].message
    metric = night[-1].metric_names.index('validation_success')
    assert night[-1].metrics_before[metric] == 0.0 < night[-1].metrics_after[metric]
    new = [a for a in announced if a.model == 'coherence']
    assert new and new[-1].version == forgot + 1
    # the cycles of the next morning ran on the committed model, those of the day did not
    versions = [c.model_version for c in cycles]
    assert f'v{forgot:04d}' in versions
    assert versions[-1] == f'v{forgot + 1:04d}', sorted(set(versions))
