"""The live line's content (ROS-free)."""

import json

from sage_bringup.status import LiveStatus


def test_the_live_line_says_how_the_robot_is_doing():
    s = LiveStatus()
    assert s.line().startswith('episode 1 | success 0/0 | sleep: off')
    for ok in (True, False, True):
        s.episode(json.dumps({'success': ok, 'seed': 1}))
    s.episode('not json')
    s.episode('[1, 2]')
    s.coherence(['vision', 'cognition_main', 'places'], [0.91, 1.0, 0.5], 3.2)
    s.coherence(['vision', 'cognition_main', 'places'], [0.9, 1.0, 0.5], 7.5)
    s.plan(json.dumps({'now': 'go to the red beacon', 'step': 0}))
    s.plan('{broken')
    s.diagnostic('/memory', 'remembering', {'stored': '1234', 'fill': '0.1'})
    s.diagnostic('/sleep', 'awake, waiting for a trigger', {})
    line = s.line(200)
    assert line == ('episode 4 | success 2/3 (0.67) | trust vis 0.90 cog 1.00 plc 0.50 | '
                    'plan: go to the red beacon | decide 7.5 ms | memory 1234 stored | '
                    'sleep: awake, waiting for a trigger')
    assert 'decide' not in s.line(200)              # latencies are per second
    assert len(s.line(40)) == 39                    # never wider than the terminal
