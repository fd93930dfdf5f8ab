"""SAGE without ROS: the same feature extraction and coherence runtime as the nodes.

``SensePipeline`` turns world Observations into the features the sensor and
cognition nodes would publish (same extractors, same FeatureBuffer), and
``CoherencePolicy`` closes the loop through a coherence runtime. Training,
sleep validation and the benchmarks use these, so what is measured offline is
what the graph runs.
"""

from __future__ import annotations

import numpy as np
from sage_common.features import FeatureBuffer
from sage_sensors.features import AudioFeatures, ImuFeatures, VisionFeatures

COGNITION = 'cognition_main'
MODALITIES = {'vision': VisionFeatures.DIM, 'audio': AudioFeatures.DIM,
              'imu': ImuFeatures.DIM, COGNITION: 384}


class SensePipeline:
    """Observation -> (vectors, trust, age) exactly as the coherence node would see them."""

    def __init__(self, modalities: dict | None = None, audio_rate: int = 16000):
        self.modalities = dict(modalities or MODALITIES)
        self.audio_rate = audio_rate
        self._embed_cache: dict[str, np.ndarray] = {}
        self.reset()

    def reset(self) -> None:
        """Start an episode: fresh extractor state and an empty buffer."""
        self.vision, self.audio, self.imu = VisionFeatures(), AudioFeatures(), ImuFeatures()
        self.buffer = FeatureBuffer(self.modalities)
        if COGNITION in self.modalities:
            self.buffer.set_lifetime(COGNITION, 30.0, 120.0)   # a plan stays valid

    def embed(self, text: str) -> np.ndarray:
        """Sentence embedding of an instruction (cached: the task has few phrasings)."""
        if text not in self._embed_cache:
            from sage_cognition.embedding import embed
            self._embed_cache[text] = embed(text)
        return self._embed_cache[text]

    def observe(self, obs):
        """Add one observation; return (vectors dict, trust [M], age [M])."""
        t = obs.time_s
        put = self.buffer.put
        if 'vision' in self.modalities:
            f, trust, _ = self.vision.encode(obs.image, t)
            put('vision', f, trust, t)
        if 'audio' in self.modalities:
            f, trust, _ = self.audio.encode(obs.audio, self.audio_rate, t)
            put('audio', f, trust, t)
        if 'imu' in self.modalities:
            f, trust, _ = self.imu.encode(obs.accel, obs.gyro, t)
            put('imu', f, trust, t)
        if obs.instruction and COGNITION in self.modalities:
            put(COGNITION, self.embed(obs.instruction), 1.0, t)
        return self.buffer.snapshot(t)

    def stack(self, vectors: dict) -> np.ndarray:
        """Concatenate per-modality vectors in model order."""
        return np.concatenate([vectors[m] for m in self.modalities])


class CoherencePolicy:
    """A world policy that senses through SensePipeline and acts through a runtime."""

    def __init__(self, runtime, uniform_trust: bool = False, budget_ms: float = float('inf')):
        self.runtime = runtime
        self.pipeline = SensePipeline(runtime.dims)
        self.uniform_trust = uniform_trust
        self.budget_ms = budget_ms
        self.decisions = []

    def reset(self) -> None:
        """Start an episode: clear senses and the recurrent state."""
        self.pipeline.reset()
        self.runtime.reset()

    def act(self, obs):
        """Return (v, w) for this observation."""
        vectors, trust, age = self.pipeline.observe(obs)
        d = self.runtime.step(vectors, trust, age, self.budget_ms, self.uniform_trust)
        self.decisions.append(d)
        return d.continuous
