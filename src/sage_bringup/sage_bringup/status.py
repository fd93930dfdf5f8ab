"""The live line of `sage run`: how the robot is doing, once a second. ROS-free.

``LiveStatus`` takes what the graph publishes (episode metrics, coherence cycles, the
plan, diagnostics) and ``line(width)`` says it in one terminal line: episode and
success so far, the trust the model used per modality, the current plan step, the
decision latency (worst of the last second), what the memory holds and the sleep
node's state. The node side (`sage_bringup.cli`) only subscribes and prints.
"""

from __future__ import annotations

import json

SHORT = {'vision': 'vis', 'audio': 'aud', 'imu': 'imu', 'cognition_main': 'cog',
         'places': 'plc', 'memory': 'mem'}


class LiveStatus:
    """What the live line shows (see the module doc)."""

    def __init__(self):
        self.episodes = self.successes = 0
        self.trust: dict = {}
        self.latency_ms: list = []
        self.step = ''
        self.memory = ''
        self.sleep = ''

    def episode(self, text: str) -> None:
        """Take one sage/episode message (the world's metrics of a finished episode)."""
        try:
            metrics = json.loads(text)
        except ValueError:
            return
        if isinstance(metrics, dict) and 'success' in metrics:
            self.episodes += 1
            self.successes += bool(metrics['success'])

    def coherence(self, modalities, trust_used, latency_ms: float) -> None:
        """Take one coherence cycle."""
        self.trust = dict(zip(modalities, trust_used))
        self.latency_ms.append(float(latency_ms))

    def plan(self, text: str) -> None:
        """Take one sage/cognition/main/plan message."""
        try:
            self.step = str(json.loads(text).get('now', ''))[:40]
        except (ValueError, AttributeError):
            pass

    def diagnostic(self, name: str, message: str, values: dict) -> None:
        """Take one diagnostics status (the memory's and the sleep node's are shown)."""
        node = name.rsplit('/', 1)[-1]
        if node == 'memory' and 'stored' in values:
            self.memory = f'{values["stored"]} stored'
        elif node == 'sleep':
            self.sleep = message[:30]

    def line(self, width: int = 120) -> str:
        """Return the line for a terminal ``width`` wide; forget the last second's latencies."""
        rate = f' ({self.successes / self.episodes:.2f})' if self.episodes else ''
        parts = [f'episode {self.episodes + 1}', f'success {self.successes}/{self.episodes}'
                 f'{rate}']
        if self.trust:
            parts.append('trust ' + ' '.join(f'{SHORT.get(m, m[:4])} {t:.2f}'
                                             for m, t in self.trust.items()))
        if self.step:
            parts.append(f'plan: {self.step}')
        if self.latency_ms:
            parts.append(f'decide {max(self.latency_ms):.1f} ms')
            self.latency_ms.clear()
        if self.memory:
            parts.append(f'memory {self.memory}')
        parts.append(f'sleep: {self.sleep or "off"}')
        return ' | '.join(parts)[:max(1, width - 1)]
