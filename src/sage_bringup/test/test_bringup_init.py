"""`sage init` installs the shipped base coherence model, and that model can drive."""

import os
import subprocess

import torch
from sage_common.checkpoints import CheckpointStore
from sage_coherence.runtime import load_runtime
from sage_sim.evaluate import MORNING, RandomPolicy, Suite, evaluate
from sage_sleep.agent import CoherencePolicy


def test_init_installs_the_base_once(tmp_path):
    env = dict(os.environ, SAGE_HOME=str(tmp_path))
    first = subprocess.run(['sage', 'init'], env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert 'installed the base coherence model as v0001' in first.stdout
    again = subprocess.run(['sage', 'init'], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and 'nothing to do' in again.stdout
    store = CheckpointStore(str(tmp_path / 'models'), 'coherence')
    assert store.versions() == [1] and store.open().meta['schedule']


def test_the_base_model_drives_better_than_random(tmp_path):
    torch.set_num_threads(1)
    subprocess.run(['sage', 'init'], env=dict(os.environ, SAGE_HOME=str(tmp_path)), check=True,
                   capture_output=True, timeout=60)
    runtime = load_runtime(str(tmp_path / 'models'))
    suite = Suite('first ten', MORNING.seeds[:10])
    ours = evaluate(lambda w: CoherencePolicy(runtime), suite)
    floor = evaluate(lambda w: RandomPolicy(0), suite)
    assert ours.success_rate >= 0.4 and ours.success_rate >= floor.success_rate + 0.2
