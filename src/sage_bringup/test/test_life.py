"""`sage life`'s report: mornings by day, what each night did, regressions."""

from argparse import Namespace

from sage_bringup.life import summarize

ARGS = Namespace(days=3, teacher='planner', morning=2)
EPISODES = [{'day': d, 'phase': p, 'success': s} for d, p, s in [
    (0, 'morning', True), (0, 'morning', False), (0, 'work', False),
    (1, 'morning', True), (1, 'morning', True),
    (2, 'morning', True), (2, 'morning', False)]]


def night(phase, committed=None):
    targets = {} if committed is None else {'coherence': {
        'committed': committed, 'message': '', 'elapsed_s': 110.0, 'budget_s': 100.0}}
    return {'phase': phase, 'targets': targets}


def report(nights):
    return summarize(ARGS, {}, EPISODES, nights, {0: 0.5},
                     {'operator': 1.0, 'labeller': 0.9})['summary']


def test_the_report_counts_a_committed_night_before_a_worse_morning_as_a_regression():
    s = report([night('done', True), night('done', True)])
    assert s['success_by_day'] == [0.5, 1.0, 0.5]
    assert (s['nights_committed'], s['nights_rolled_back'], s['nights_failed']) == (2, 0, 0)
    assert s['regressions'] == 1                  # the second night: 1.0 -> 0.5
    assert s['max_budget_overrun'] == 0.1 and s['final_vs_teacher'] == 0.5
    assert (s['teacher_success'], s['labeller'], s['labeller_success']) == (1.0, 'planner', 0.9)


def test_a_night_that_yielded_or_failed_is_no_rollback():
    s = report([night('done', False), night('idle')])
    assert (s['nights_committed'], s['nights_rolled_back'], s['nights_failed']) == (0, 1, 1)
    assert s['regressions'] == 0
