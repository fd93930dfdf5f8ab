"""No message can stop SAGE: a small fuzz budget on every subscribed topic of the default
graph (sage_testing.fuzz; `python bench/fuzz.py` runs the large one)."""

import pytest
from sage_testing.fuzz import run_fuzz


@pytest.mark.timeout(600)
def test_fuzzed_messages_on_every_topic_stop_no_node(tmp_path):
    result = run_fuzz(str(tmp_path), messages=600, seed=1)
    summary, detail = result['summary'], result['detail']
    assert summary['topics_fuzzed'] >= 15, detail
    assert all(t['messages'] > 0 for t in detail['per_topic'].values()), detail['per_topic']
    assert summary['node_exits'] == 0, (detail, result['stderr_tail'])
    assert summary['cmd_vel_violations'] == 0 and detail['cmd_vel_seen'] > 0
    assert summary['nonfinite_stored'] == 0
    world = detail['world']     # the world node, fuzzed alone: its night ends on sleep status
    assert {'/sage/sleep/status', '/cmd_vel', '/sage/action'} <= set(world['types']), world
    assert world['alive'] and world['poses_seen'] > 0, world
