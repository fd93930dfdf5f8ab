"""The planner drives by the places feature alone, and labels like a teacher that sees only it."""

import numpy as np
from sage_memory.places import PlacesConfig
from sage_sim.evaluate import MORNING, Suite, evaluate
from sage_sleep.agent import MODALITIES, PlannerPolicy
from sage_sleep.learn import collect

FIRST = Suite('first', MORNING.seeds[:6])


def test_the_planner_reaches_remembered_targets_around_what_is_in_the_way():
    routed = evaluate(PlannerPolicy, FIRST)
    assert routed.success_rate >= 5 / 6, routed.episodes
    straight = evaluate(lambda w: PlannerPolicy(places=PlacesConfig(routes=False)), FIRST)
    # steering straight at a remembered target drives into what stands between
    assert routed.collisions_per_episode < straight.collisions_per_episode


def test_planner_labels_come_from_the_features_alone():
    # a detour scene: a wall of pillars between the start and the target
    ep, = collect([3], teacher='planner')
    assert ep.meta['scene'] == 'detour'
    labelled = ep.teacher[ep.teacher >= 0]
    assert len(labelled) and set(np.unique(labelled)) <= set(range(6))
    # a fresh planner fed only the recorded features gives every label again
    planner, dims = PlannerPolicy(), list(MODALITIES.values())
    for features, label in zip(ep.features, ep.teacher):
        vectors = dict(zip(MODALITIES, np.split(features, np.cumsum(dims)[:-1])))
        again = planner.label(vectors)
        assert label < 0 or again == label


def test_the_planner_teacher_goes_back_to_where_it_started():
    # language training episodes "go to X and then come back to where you started": the
    # plan's last step names the start's place, which the memory holds as a token
    episodes = collect([4, 9, 24], teacher='planner')
    assert [e.meta['scene'] for e in episodes] == ['language_train'] * 3
    assert all(e.success for e in episodes), [len(e.reward) for e in episodes]
