"""The one ACT loop: think segment by segment until halted, out of segments or out of time.

Every HRM runner uses it: the coherence runtime (one control cycle of the robot, torch,
ONNX Runtime or TensorRT), batched puzzle inference (``sage_hrm.inference.ACTRunner``)
and the CUDA-graph runner (``sage_hrm.gpu.GraphRunner``, one "segment" being a chunk
of segments captured in a graph). The caller's ``segment`` runs one segment and says
whether every sample has halted; the loop owns the stopping rule and the time budget
(the ATP budget of a control cycle): it stops before a segment that its running estimate
says would overrun ``budget_s``, after at least one segment, so an answer always exists.
"""

from __future__ import annotations

import math
import time
from typing import Callable


class SegmentClock:
    """A running estimate of one segment's wall time (an exponential average)."""

    def __init__(self, smoothing: float = 0.3):
        self.smoothing = smoothing
        self.estimate_s = 0.0

    def add(self, seconds: float) -> None:
        """Fold one measured segment into the estimate."""
        a = self.smoothing
        self.estimate_s = seconds if self.estimate_s == 0 else \
            (1 - a) * self.estimate_s + a * seconds


def think(segment: Callable[[], bool], max_segments: int, budget_s: float = math.inf,
          clock: SegmentClock | None = None) -> tuple[int, bool]:
    """Run ``segment()`` until it returns True (all halted) or a limit is reached.

    Returns (segments run, whether the budget stopped it). ``clock`` keeps the segment
    time estimate across calls (pass the same one each cycle).
    """
    clock = clock or SegmentClock()
    start = time.perf_counter()
    segments = 0
    while True:
        t = time.perf_counter()
        halted = segment()
        clock.add(time.perf_counter() - t)
        segments += 1
        if halted or segments >= max_segments:
            return segments, False
        if time.perf_counter() - start + clock.estimate_s > budget_s:
            return segments, True
