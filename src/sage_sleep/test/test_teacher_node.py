"""The teacher node in a real rclpy graph labels as the offline planner teacher does."""

import json

import numpy as np
from sage_msgs.msg import Action, Feature
from sage_testing.graph import Graph
from sage_sleep.agent import COGNITION, MODALITIES, PLACES
from sage_sleep.learn import collect
from sage_sleep.teacher_node import TeacherNode
from sage_sim.world import WorldConfig
from std_msgs.msg import String


def feature(modality, data, t):
    msg = Feature(modality=modality, data=[float(x) for x in data], trust=1.0)
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int(round((t % 1) * 1e9))
    return msg


def test_the_node_gives_the_offline_planner_labels_for_the_same_features():
    # a detour scene (walls between the robot and the target), labelled offline
    ep, = collect([3], teacher='planner', world_config=WorldConfig(time_limit_s=12.0))
    dims = list(MODALITIES.values())
    steps = [dict(zip(MODALITIES, np.split(f, np.cumsum(dims)[:-1]))) for f in ep.features]
    dt = WorldConfig().dt
    with Graph() as g:
        labels = g.collect(Action, 'sage/teacher_action', 1000)
        node = g.add(TeacherNode(context=g.context))
        instruction = g.publisher(Feature, 'sage/features/cognition_main')
        places = g.publisher(Feature, 'sage/features/places')
        g.publisher(String, 'sage/episode').publish(String(data=json.dumps({'episode': 0})))
        junk = feature(PLACES, [np.nan] * 5, 0.0)          # wrong length, non-finite
        places.publish(junk)
        assert g.wait_for(lambda: node.rejected == 1, 10)
        for t, vectors in enumerate(steps):
            if t == 0 or not np.array_equal(vectors[COGNITION], steps[t - 1][COGNITION]):
                instruction.publish(feature(COGNITION, vectors[COGNITION], t * dt))
                assert g.wait_for(lambda: node.instruction is not None, 10)
            places.publish(feature(PLACES, vectors[PLACES], t * dt))
            assert g.wait_for(lambda: len(labels) == t + 1, 10), t
    got = np.array([a.discrete_id for a in labels])
    want = ep.teacher
    labelled = want >= 0
    assert labelled.sum() > 50
    assert np.array_equal(got[labelled], want[labelled]), (got, want)
    assert {a.source for a in labels} == {'planner'} and all(a.confidence == 1 for a in labels)
