"""In the real graph, a remembered target steers the robot after it has left the camera's view.

`sage run --processes` with the default params, the world laying out recall scenes: the
target in view ahead, then 2.6 s of the world turning the robot away (its commands
ignored). With the memory node's places feature the shipped model turns back and drives
to the target; the same graph with places off (``places_tokens: 0``) does not.
"""

import json
import os
import subprocess
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = (30004, 30005)          # recall-suite episodes


def drive(tmp_path, places_tokens: int) -> list[dict]:
    home = tmp_path / f'home{places_tokens}'
    home.mkdir()
    env = dict(os.environ, SAGE_HOME=str(home))
    subprocess.run(['sage', 'init'], env=env, check=True, capture_output=True)
    params = yaml.safe_load(open(os.path.join(ROOT, 'config', 'sage.yaml')))
    metrics = home / 'episodes.jsonl'
    params['world']['ros__parameters'].update(
        seed=SEEDS[0], episodes=len(SEEDS), scene='recall', opening_s=2.6, time_limit_s=15.0,
        metrics_file=str(metrics))
    params['memory']['ros__parameters']['places_tokens'] = places_tokens
    if not places_tokens:       # nothing to wait for but the coherence node's first decision
        params['world']['ros__parameters']['start_after'] = ['sage/coherence']
    path = home / 'params.yaml'
    path.write_text(yaml.safe_dump(params))
    err = open(home / 'graph.err', 'w')
    proc = subprocess.Popen(['sage', 'run', '--processes', '--params-file', str(path)],
                            env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            time.sleep(1.0)
            done = [json.loads(x) for x in metrics.read_text().splitlines()] \
                if metrics.exists() else []
            if len(done) == len(SEEDS):
                return done
            assert proc.poll() is None, (home / 'graph.err').read_text()[-3000:]
        raise AssertionError(f'{len(done)} of {len(SEEDS)} episodes in 240 s')
    finally:
        proc.terminate()
        proc.wait(60)


def test_a_remembered_target_steers_the_robot_back_to_it(tmp_path):
    remembered = drive(tmp_path, 12)
    assert [e['seed'] for e in remembered] == list(SEEDS)
    assert all(e['success'] for e in remembered), remembered
    forgotten = drive(tmp_path, 0)
    assert not any(e['success'] for e in forgotten), forgotten
