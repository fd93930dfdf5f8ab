"""SAGE without ROS: the same sensing steps and coherence runtime as the nodes.

``SensePipeline`` turns world Observations into the features the sensor and
cognition nodes publish, by calling the very sensing steps the nodes call
(sage_sensors.sensing, sage_cognition.instruction) with the nodes' default
configuration, and the FeatureBuffer the coherence node fuses from.
``CoherencePolicy`` closes the loop through a coherence runtime. Training, sleep
validation and the benchmarks use these, so what is measured offline is what the
graph runs (tests/test_parity.py and bench/parity.py check it on a real bag).
"""

from __future__ import annotations

import numpy as np
from sage_cognition.instruction import InstructionSensing
from sage_common.features import FeatureBuffer
from sage_sensors.features import AudioFeatures, ImuFeatures, VisionFeatures
from sage_sensors.sensing import (CameraSensing, ImuSensing, MicrophoneConfig,
                                  MicrophoneSensing)

COGNITION = 'cognition_main'
MODALITIES = {'vision': VisionFeatures.DIM, 'audio': AudioFeatures.DIM,
              'imu': ImuFeatures.DIM, COGNITION: 384}
# a plan stays valid (the coherence node's sticky_drop_after_s, stale from a quarter)
STICKY_STALE_S, STICKY_DROP_S = 30.0, 120.0


class SensePipeline:
    """Observation -> (vectors, trust, age) exactly as the coherence node would see them."""

    def __init__(self, modalities: dict | None = None, audio_rate: int = 16000):
        self.modalities = dict(modalities or MODALITIES)
        self.audio_rate = audio_rate
        self.instruction = InstructionSensing()
        self.reset()

    def reset(self) -> None:
        """Start an episode: fresh sensing state and an empty buffer."""
        # voice activity only adds a quality figure: off here, it costs time, not features
        self.camera, self.imu = CameraSensing(), ImuSensing()
        self.microphone = MicrophoneSensing(MicrophoneConfig(vad=False))
        self.buffer = FeatureBuffer(self.modalities)
        if COGNITION in self.modalities:
            self.buffer.set_lifetime(COGNITION, STICKY_STALE_S, STICKY_DROP_S)

    def embed(self, text: str) -> np.ndarray:
        """Sentence embedding of an instruction, as the cognition node publishes it."""
        return self.instruction.step(text, 0.0).vector

    def observe(self, obs):
        """Add one observation; return (vectors dict, trust [M], age [M])."""
        t = obs.time_s
        sensed = {}
        if 'vision' in self.modalities:
            sensed['vision'] = self.camera.step(obs.image, t, t)
        if 'audio' in self.modalities:
            sensed['audio'] = self.microphone.step(obs.audio, self.audio_rate, t, t)
        if 'imu' in self.modalities:
            sensed['imu'] = self.imu.step(obs.accel, obs.gyro, t, t)
        if obs.instruction and COGNITION in self.modalities:
            sensed[COGNITION] = self.instruction.step(obs.instruction, t)
        for modality, s in sensed.items():
            if s is not None:
                self.buffer.put(modality, s.vector, s.trust, t)
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
