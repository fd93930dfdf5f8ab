"""The one ACT loop: halting, the segment limit and the time budget."""

import time

from sage_hrm.act import SegmentClock, think


def test_stops_when_halted_or_out_of_segments():
    calls = []
    assert think(lambda: calls.append(1) or len(calls) == 3, 10) == (3, False)
    calls.clear()
    assert think(lambda: calls.append(1) or False, 4) == (4, False)


def test_budget_stops_before_a_segment_that_would_overrun_and_one_always_runs():
    def slow():
        time.sleep(0.01)
        return False
    clock = SegmentClock()
    segments, exhausted = think(slow, 1000, 0.055, clock)
    assert exhausted and 3 <= segments <= 5
    assert clock.estimate_s >= 0.009
    assert think(slow, 1000, 0.0, clock) == (1, True)    # an answer always exists
