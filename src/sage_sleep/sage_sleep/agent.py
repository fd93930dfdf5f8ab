"""SAGE without ROS: the same sensing steps and coherence runtime as the nodes.

``SensePipeline`` turns world Observations into the features the sensor, cognition
and memory nodes publish, by calling the very sensing steps the nodes call
(sage_sensors.sensing, sage_cognition.instruction; for places the camera node's
detector and the memory node's SpatialMemory and PlacesFeature) with the nodes' default
configuration, and the FeatureBuffer the coherence node fuses from.
``CoherencePolicy`` closes the loop through a coherence runtime; ``PlannerPolicy``
drives by the places feature alone (the reference for what memory can give, and the
'planner' teacher). Training, sleep
validation and the benchmarks use these, so what is measured offline is what the
graph runs (tests/test_parity.py and bench/parity.py check it on a real bag).
"""

from __future__ import annotations

import math

import numpy as np
from sage_cognition.plan import Planner, PlanSensing
from sage_common.features import FeatureBuffer
from sage_memory.places import (EMBED_DIM, FIELDS, START_LABEL, PlacesConfig, PlacesFeature,
                                tokens)
from sage_memory.spatial import SpatialMemory
from sage_sensors.detect import Detector, SCAN_MAX_M, SCAN_MIN_M, even_scan
from sage_sensors.features import AudioFeatures, ImuFeatures, VisionFeatures
from sage_sensors.sensing import (CameraSensing, ImuSensing, MicrophoneConfig,
                                  MicrophoneSensing)
from sage_sim.world import ACTION_NAMES, ACTIONS, WorldConfig, steer

COGNITION, PLACES = 'cognition_main', 'places'
MODALITIES = {'vision': VisionFeatures.DIM, 'audio': AudioFeatures.DIM,
              'imu': ImuFeatures.DIM, COGNITION: 384, PLACES: PlacesConfig().dim}
TOKEN_SETS = {PLACES: [PlacesConfig().max_tokens, EMBED_DIM]}
# a plan stays valid (the coherence node's sticky_drop_after_s, stale from a quarter)
STICKY_STALE_S, STICKY_DROP_S = 30.0, 120.0


class SensePipeline:
    """Observation -> (vectors, trust, age) exactly as the coherence node would see them."""

    def __init__(self, modalities: dict | None = None, audio_rate: int = 16000,
                 world: WorldConfig | None = None, places: PlacesConfig | None = None,
                 planner: Planner | None = None):
        self.modalities = dict(modalities or MODALITIES)
        self.audio_rate = audio_rate
        # the cognition node's step: the instruction, or with a planner its plan's step
        self.plan = PlanSensing(planner)
        w = world or WorldConfig()
        # the intrinsics of the world's camera_info (a centred pinhole)
        self.intrinsics = (w.focal_px, w.focal_px, w.width / 2, w.height / 2)
        self.detector, self.places = Detector(), PlacesFeature(places)
        self.reset()

    def reset(self) -> None:
        """Start an episode: fresh sensing state and an empty buffer."""
        # voice activity only adds a quality figure: off here, it costs time, not features
        self.camera, self.imu = CameraSensing(), ImuSensing()
        self.microphone = MicrophoneSensing(MicrophoneConfig(vad=False))
        self.buffer = FeatureBuffer(self.modalities)
        self.spatial = SpatialMemory()      # the memory node forgets places each episode
        if COGNITION in self.modalities:
            self.buffer.set_lifetime(COGNITION, STICKY_STALE_S, STICKY_DROP_S)

    def embed(self, text: str) -> np.ndarray:
        """Sentence embedding of an instruction, as the cognition node publishes it."""
        return self.plan.sensing.step(text, 0.0).vector

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
            sensed[COGNITION] = self.plan.instruct(obs.instruction, t)
        if PLACES in self.modalities:
            sensed[PLACES] = self.remember(obs)
            o = obs.odom
            step = self.plan.follow(sensed[PLACES].vector, (o.x, o.y, o.yaw), obs.reward, t)
            if step is not None and COGNITION in self.modalities:
                sensed[COGNITION] = step
        for modality, s in sensed.items():
            if s is not None:
                self.buffer.put(modality, s.vector, s.trust, t)
        return self.buffer.snapshot(t)

    def remember(self, obs):
        """Detect, place the detections by odometry and read the places, as the graph does.

        The camera node detects; the memory node fuses the detections at the frame's odom
        pose and publishes the places feature, then takes the frame's scan into its grid.
        """
        o, t = obs.odom, obs.time_s
        pose = (o.x, o.y, o.yaw)
        detections, (bearings, ranges) = self.detector.look(obs.image, *self.intrinsics)
        self.spatial.observe(t, pose, o.covariance, detections)
        sensed = self.places.step(self.spatial, pose, t)
        angles, ranges = even_scan(bearings, ranges)         # as camera/scan carries it
        self.spatial.scan(pose, angles, ranges, SCAN_MIN_M, SCAN_MAX_M)
        return sensed

    def stack(self, vectors: dict) -> np.ndarray:
        """Concatenate per-modality vectors in model order."""
        return np.concatenate([vectors[m] for m in self.modalities])


class CoherencePolicy:
    """A world policy that senses through SensePipeline and acts through a runtime."""

    def __init__(self, runtime, uniform_trust: bool = False, budget_ms: float = float('inf'),
                 zeroed: tuple = (), places: PlacesConfig | None = None,
                 planner: Planner | None = None):
        self.runtime = runtime
        self.pipeline = SensePipeline(runtime.dims, places=places, planner=planner)
        self.uniform_trust = uniform_trust
        self.budget_ms = budget_ms
        self.zeroed = tuple(zeroed)      # modalities whose features are zeroed (ablations)
        self.decisions = []

    def reset(self) -> None:
        """Start an episode: clear senses and the recurrent state."""
        self.pipeline.reset()
        self.runtime.reset()

    def act(self, obs):
        """Return (v, w) for this observation."""
        vectors, trust, age = self.pipeline.observe(obs)
        for m in self.zeroed:
            vectors[m] = np.zeros_like(vectors[m])
        d = self.runtime.step(vectors, trust, age, self.budget_ms, self.uniform_trust)
        self.decisions.append(d)
        return d.continuous


class PlannerTeacher:
    """The 'planner' teacher, offline and in the graph (sage_sleep.teacher_node).

    It labels a step from the places feature and the instruction alone, as the coherence
    model sees them.

    The instruction names the detector's label (or the start's place, "where you
    started") whose sentence embedding is nearest its own. With a landmark of that
    label remembered, it steers at the landmark's waypoint (the next point of the
    shortest path over the remembered grid, sage_memory.route);
    without one, it first turns once around where it stands, then drives to the
    frontier's waypoint. It reads only what the graph's features carry, so it is both
    the reference for what memory can give and an honest teacher.
    """

    TURN = ACTION_NAMES.index('turn_left')

    def __init__(self, places: PlacesFeature | None = None, step_s: float = WorldConfig.dt):
        self.places = places or PlacesFeature()
        # what an instruction can name: a detector's label, or the start's place
        self.labels = list(Detector().cfg.classes) + \
            ([START_LABEL] if self.places.cfg.start_place else [])
        self.turn_step = ACTIONS[self.TURN][2] * step_s     # rad per labelled step
        self.reset()

    def reset(self) -> None:
        """Start an episode: no turn yet."""
        self.turned = 0.0

    def label(self, vectors: dict) -> int:
        """Return the action for this step's features (one step of ``step_s``)."""
        places = self.places
        instruction = vectors[COGNITION]
        want = places.label_vector(max(self.labels, key=lambda lb: float(
            places.label_vector(lb) @ instruction)))
        valid, frontier, via_cos, via_sin = (FIELDS.index(f) for f in (
            'valid', 'frontier', 'via_cos', 'via_sin'))
        held = [t for t in tokens(vectors[PLACES], places.cfg) if t[valid] > 0.5]
        goal = next((t for t in held if t[frontier] < 0.5 and
                     np.array_equal(t[len(FIELDS):], want)), None)
        if goal is None and self.turned < 2 * math.pi:
            self.turned += self.turn_step
            return self.TURN
        goal = goal if goal is not None else next((t for t in held if t[frontier] > 0.5), None)
        if goal is None:
            return self.TURN
        return steer(math.atan2(goal[via_sin], goal[via_cos]))


class PlannerPolicy:
    """Drives as the planner teacher labels (``PlannerTeacher``), through the sensing steps."""

    def __init__(self, world=None, pipeline: SensePipeline | None = None,
                 config: WorldConfig | None = None, places: PlacesConfig | None = None):
        self.pipeline = pipeline or SensePipeline(places=places)
        self.teacher = PlannerTeacher(self.pipeline.places, (config or WorldConfig()).dt)
        self.reset()

    def reset(self) -> None:
        """Start an episode: fresh senses, no turn yet."""
        self.pipeline.reset()
        self.teacher.reset()

    def label(self, vectors: dict) -> int:
        """Return the action for the features of this step."""
        return self.teacher.label(vectors)

    def act(self, obs):
        """Return (v, w) for this observation (the policy drives)."""
        vectors, _, _ = self.pipeline.observe(obs)
        return ACTIONS[self.label(vectors)][1:]
