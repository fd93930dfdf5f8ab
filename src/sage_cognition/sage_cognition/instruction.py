"""The instruction as a sensed feature: sanitised text -> sentence embedding, trust 1.

ROS-free. The cognition node without a language model (backend ``none``) publishes
exactly this, and the offline pipeline (``sage_sleep.agent.SensePipeline``: training,
sleep validation, benchmarks) calls the same step, so both feed the coherence model the
same vector for the same words.
"""

from __future__ import annotations

from sage_common.features import Sensed

from sage_cognition.text import sanitize


class InstructionSensing:
    """Instruction text -> its embedding (cached: a task has few phrasings)."""

    def __init__(self, max_chars: int = 240):
        self.max_chars = max_chars
        self._cache: dict = {}

    def clean(self, text: str) -> str:
        """Return the text the robot acts on ('' when nothing printable is left)."""
        return sanitize(text, self.max_chars)

    def step(self, text: str, stamp_s: float) -> Sensed:
        """Embed one instruction; ValueError when nothing printable is left."""
        text = self.clean(text)
        if not text:
            raise ValueError('empty or unprintable instruction')
        if text not in self._cache:
            from sage_cognition.embedding import embed
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[text] = embed(text)
        return Sensed(self._cache[text], 1.0, {'chars': float(len(text))}, stamp_s)
