"""Instructions that need understanding: held-out phrasings, goals the world judges."""

import math

import numpy as np
import pytest
from sage_sim.evaluate import LANGUAGE, OraclePolicy, Suite, evaluate, start
from sage_sim.language import COLOURED, KINDS, TEMPLATES, nearest_to, task
from sage_sim.world import ACTIONS, START, World


def test_test_phrasings_are_held_out_by_construction():
    for kind in KINDS:
        train, test = TEMPLATES[kind]
        assert not set(train) & set(test)
    for colour, (train, test) in COLOURED.items():
        assert not set(train) & set(test)
    world, rng = World(), np.random.default_rng(0)
    train_texts = {task(world, rng, 'train').text for _ in range(300)}
    test_texts = {task(world, rng, 'test').text for _ in range(300)}
    assert not train_texts & test_texts
    kinds = {task(world, rng, 'test').kind for _ in range(100)}
    assert kinds == set(KINDS)
    with pytest.raises(ValueError, match='split'):
        task(world, rng, 'validation')
    with pytest.raises(ValueError, match='kind'):
        task(world, rng, 'test', kind='poetry')


def test_each_kind_means_what_it_says_on_the_layout():
    world = World(seed=50_000)
    rng = np.random.default_rng(1)
    xy = {o[4]: (o[0], o[1]) for o in world.objects if o[4] != 'pillar'}
    for kind in KINDS:
        t = task(world, rng, 'test', kind)
        if kind == 'relation':
            ref = t.plan[0][1]
            near = t.goals[0][0]
            assert near == nearest_to(world.objects, ref) != ref
            assert all(math.dist(xy[near], xy[ref]) <= math.dist(xy[n], xy[ref])
                       for n in xy if n != ref)
        elif kind == 'exclusion':
            assert len(t.goals[0]) == 3 and t.plan[0][1] not in t.goals[0]
        elif kind == 'sequence':
            assert len(t.goals) == 2 and t.goals[0] != t.goals[1]
        elif kind == 'return':
            assert t.goals[1] == (START,)


def test_the_world_judges_a_sequence_in_order_and_pays_each_arrival():
    world = World()
    world.set_scenario({'red': (1.5, 0.0), 'green': (-1.5, 0.0), 'blue': (0.0, 2.0),
                        'yellow': (0.0, -2.0)}, 'red', (0.0, 0.0, 0.0))
    world.set_task('visit red, then green', (('red',), ('green',)))
    assert world.target_name == 'red'
    rewards = []
    while not world.done:
        _, r, _, info = world.step(*ACTIONS[world.oracle_action()][1:])
        rewards.append(r)
    assert world.success and world.metrics()['goals_reached'] == 2
    assert sum(r > 0.5 for r in rewards) == 2          # one arrival bonus per goal
    assert world.target_name == 'green'


def test_return_goes_back_to_the_start_and_exclusion_takes_any_other():
    world = World()
    pose = (0.5, 0.5, 0.0)
    beacons = {'red': (2.0, 0.5), 'green': (-2.0, 0.5), 'blue': (0.5, 2.3),
               'yellow': (0.5, -1.5)}
    world.set_scenario(beacons, 'red', pose)
    world.set_task('touch red and come back', (('red',), (START,)))
    while not world.done:
        world.step(*ACTIONS[world.oracle_action()][1:])
    assert world.success and math.hypot(world.x - 0.5, world.y - 0.5) < world.cfg.success_dist
    world.set_scenario(beacons, 'red', pose)
    world.set_task('any beacon but red', (('green', 'blue', 'yellow'),))
    assert world.target_name == 'blue'        # the nearest that counts (red is nearer)
    with pytest.raises(ValueError, match='goals'):
        world.set_task('go to the purple one', (('purple',),))
    world.step(0.0, 0.0)
    with pytest.raises(RuntimeError):
        world.set_task('too late', (('red',),))


def test_the_language_suite_is_seeded_and_the_oracle_solves_it():
    world = World(LANGUAGE.config())
    first = [(start(world, s, 'language'), world.instruction, world.goals)[1:]
             for s in LANGUAGE.seeds[:6]]
    again = [(start(world, s, 'language'), world.instruction, world.goals)[1:]
             for s in LANGUAGE.seeds[:6]]
    assert first == again
    short = Suite('language', LANGUAGE.seeds[:8], time_limit_s=60.0, scene='language')
    assert evaluate(OraclePolicy, short).success_rate == 1.0
