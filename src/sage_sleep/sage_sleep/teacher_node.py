"""The teacher node: the planner labels what the robot sees, on ``sage/teacher_action``.

A thin adapter around ``sage_sleep.agent.PlannerTeacher``: it reads only the features
the coherence model fuses — what the memory remembers (``sage/features/places``) and the
instruction or the plan's step (``sage/features/<instruction>``) — and answers each
places message with the action the planner would take. The memory node stores it with
the step, so a night learns the robot's own states labelled by a teacher whose labels
the model can follow (a DAgger round). ``sage/episode`` starts a new episode. It never
drives: it only labels.
"""

from __future__ import annotations

from sage_common.features import FeatureRejected, check_feature
from sage_common.places_layout import TOKEN_DIM
from sage_memory.places import EMBED_DIM, PlacesConfig, PlacesFeature
from sage_ros.common import (Diagnostics, Param, QOS_CHOICES, Throttle, declare_parameters,
                             qos_from_name, run_node, stamp)
from sage_ros.guard import GuardedNode
from sage_sim.world import ACTION_NAMES, ACTIONS

from sage_msgs.msg import Action, Feature
from std_msgs.msg import String

from sage_sleep.agent import COGNITION, PLACES, PlannerTeacher

PARAMS = [
    Param('instruction', COGNITION, 'the cognition feature carrying the instruction or the '
          "plan's step (sage/features/<instruction>)"),
    Param('places_tokens', 12, "tokens in sage/features/places (the memory node's "
          'places_tokens)', low=1, high=64),
    Param('frame_period_s', 0.1, 'seconds between camera frames, so between places messages: '
          'each label counts as a step this long (the turn the planner tracks)', low=0.001,
          high=10.0),
    Param('qos_features', 'SENSOR_DATA', 'QoS of the feature subscriptions',
          choices=QOS_CHOICES),
]


class TeacherNode(GuardedNode):
    """Publishes the planner teacher's label for each places message."""

    def __init__(self, **kwargs):
        super().__init__(kwargs.pop('node_name', 'teacher'), **kwargs)
        self.p = declare_parameters(self, PARAMS)
        self.diag = Diagnostics(self)
        places = PlacesFeature(PlacesConfig(max_tokens=self.p['places_tokens']))
        places.load()                       # the sentence model now, not at the first label
        self.teacher = PlannerTeacher(places, self.p['frame_period_s'])
        self.instruction = None
        self.labels = self.rejected = 0
        self._warn = Throttle(5.0)
        qos = qos_from_name(self.p['qos_features'])
        self.create_subscription(Feature, f'sage/features/{self.p["instruction"]}',
                                 self._on_instruction, qos)
        self.create_subscription(Feature, 'sage/features/places', self._on_places, qos)
        self.create_subscription(String, 'sage/episode', self._on_episode, 10)
        self.pub = self.create_publisher(Action, 'sage/teacher_action', 10)
        self.diag.set('WARN', f'no instruction yet on sage/features/{self.p["instruction"]}',
                      labels=0, rejected=0)

    def _reject(self, what: str) -> None:
        self.rejected += 1
        if self._warn():
            self.get_logger().warning(f'rejected {what} ({self.rejected} so far)')
        self.diag.set(self.diag.level, self.diag.message, rejected=self.rejected)

    def _on_instruction(self, msg: Feature) -> None:
        try:
            self.instruction = check_feature(self.p['instruction'], msg.data, msg.trust,
                                             EMBED_DIM)
        except FeatureRejected as exc:
            self._reject(str(exc))

    def _on_episode(self, msg: String) -> None:
        self.teacher.reset()                # any episode event: the planner starts over

    def _on_places(self, msg: Feature) -> None:
        try:
            places = check_feature(PLACES, msg.data, msg.trust,
                                   self.p['places_tokens'] * TOKEN_DIM)
        except FeatureRejected as exc:
            self._reject(str(exc))
            return
        if self.instruction is None:
            return                          # nothing asked yet: nothing to teach
        a = self.teacher.label({COGNITION: self.instruction, PLACES: places})
        out = Action(discrete_id=a, discrete_name=ACTION_NAMES[a],
                     continuous=[float(x) for x in ACTIONS[a][1:]], confidence=1.0,
                     source='planner')
        out.header.stamp, out.header.frame_id = stamp(self), 'base_link'
        self.pub.publish(out)
        self.labels += 1
        self.diag.set('OK', f'labelling: {ACTION_NAMES[a]}', labels=self.labels)


def main(args=None):
    """Run the teacher node."""
    raise SystemExit(run_node(TeacherNode, args))
