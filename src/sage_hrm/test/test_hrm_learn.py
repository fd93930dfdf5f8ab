"""The HRM learns easy (4x4, singles-only) Sudoku on the CPU, through the training command."""

import json
import os

import pytest

from sage_hrm import cli


@pytest.mark.slow
def test_learns_4x4_sudoku_to_95_percent(tmp_path):
    out = os.path.join(tmp_path, 'run')
    argv = ['--out', out, '--task', 'sudoku4', '--n-train', '1000', '--n-test', '200',
            '--steps', '600', '--augment', '--log-every', '100', '--checkpoint-every', '200',
            '--threads', '2']
    assert cli.main(['train'] + argv) == 0
    with open(os.path.join(out, 'eval.json')) as f:
        r = json.load(f)
    assert r['n'] == 200
    assert r['exact'] >= 0.95, r
    assert r['cell_acc'] >= r['exact']
    assert sum(r['steps_hist']) == 200
    assert os.path.getsize(os.path.join(out, 'accuracy_vs_segments.png')) > 1000
    # the run is complete: training again resumes at the last step and does nothing more
    assert cli.main(['train'] + argv) == 0
    # eval and export work from the checkpoint
    assert cli.main(['eval'] + argv) == 0
    assert cli.main(['export'] + argv + ['--onnx', os.path.join(out, 'seg.onnx')]) == 0
    assert os.path.getsize(os.path.join(out, 'seg.onnx')) > 10_000
