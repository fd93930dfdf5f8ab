"""Instructions that need understanding, and what each one means in the world. ROS-free.

A seeded generator of five kinds of instruction, each with a train and a test set of
phrasings that share no template (held out by construction):

``knowledge``  a beacon named by what has its colour ("the one the colour of grass")
``relation``   the beacon nearest another ("the beacon closest to the blue one")
``sequence``   two beacons in order ("visit red, then blue")
``exclusion``  any beacon but one ("any beacon except yellow")
``return``     a beacon, then back to the start ("touch green and come back")

``task(world, rng, split)`` draws one for the world's current layout and returns a
``Task``: its text, its kind and its ``goals`` (what ``World.set_task`` judges: the
places to reach in order, each a tuple of the names that count), so any plan that
reaches them succeeds. ``expected_plan`` gives the plan that means the same
(``sage_cognition.plan`` steps), for few-shot prompts and plan accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sage_sim.world import BEACONS, START

LABELS = tuple(BEACONS)
KINDS = ('knowledge', 'relation', 'sequence', 'exclusion', 'return')
SPLITS = ('train', 'test')

# what has each colour: train and test share no description
COLOURED = {
    'red': (('a ripe tomato', 'a fire engine', 'a stop sign'),
            ('blood', 'a strawberry')),
    'green': (('a leaf', 'a frog', 'a lime'),
              ('grass', 'an emerald')),
    'blue': (('the sea', 'a sapphire', 'blueberries'),
             ('the sky', 'a swimming pool')),
    'yellow': (('a banana', 'a lemon', 'egg yolk'),
               ('the sun', 'a canary')),
}
TEMPLATES = {
    'knowledge': (('go to the beacon the colour of {a}', 'find the one that looks like {a}'),
                  ('head for the one the colour of {a}', 'drive to the beacon coloured like {a}')),
    'relation': (('go to the beacon nearest the {a} one', 'find the beacon closest to {a}'),
                 ('drive to whichever beacon is next to the {a} one',
                  'the beacon beside {a} is your goal')),
    'sequence': (('visit {a}, then {b}', 'go to the {a} beacon and after that the {b} one'),
                 ('first {a}, then {b}', 'drive to {a} and then on to {b}')),
    'exclusion': (('go to any beacon except {a}', 'any beacon but the {a} one'),
                  ('pick a beacon that is not {a}', 'head for some beacon, just not {a}')),
    'return': (('go to {a} and then come back to where you started',
                'visit the {a} beacon, then return to the start'),
               ('touch {a} and come back', 'drive to {a}, then go back home')),
}


@dataclass(frozen=True)
class Task:
    """One instruction, its kind and what it asks for (``World.set_task``'s goals)."""

    kind: str
    text: str
    goals: tuple
    plan: tuple           # the plan that means the same: ((do, to), ...)


def nearest_to(objects, label: str) -> str:
    """Return the beacon nearest ``label``'s beacon among ``objects`` (never itself).

    ``objects``: ``World.objects``, (x, y, radius, rgb, name) each.
    """
    xy = {o[4]: (o[0], o[1]) for o in objects if o[4] in LABELS}
    ax, ay = xy[label]
    return min((n for n in xy if n != label),
               key=lambda n: math.hypot(xy[n][0] - ax, xy[n][1] - ay))


def task(world, rng, split: str = 'test', kind: str | None = None) -> Task:
    """Draw a task of ``kind`` (any when None) with ``split``'s phrasings for ``world``."""
    if split not in SPLITS:
        raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    part = SPLITS.index(split)
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]
    if kind not in KINDS:
        raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
    a, b = (LABELS[i] for i in rng.permutation(len(LABELS))[:2])
    template = TEMPLATES[kind][part][int(rng.integers(len(TEMPLATES[kind][part])))]
    if kind == 'knowledge':
        things = COLOURED[a][part]
        text = template.format(a=things[int(rng.integers(len(things)))])
        return Task(kind, text, ((a,),), (('go_to', a),))
    text = template.format(a=a, b=b)
    if kind == 'relation':
        return Task(kind, text, ((nearest_to(world.objects, a),),), (('go_near', a),))
    if kind == 'sequence':
        return Task(kind, text, ((a,), (b,)), (('go_to', a), ('go_to', b)))
    if kind == 'exclusion':
        return Task(kind, text, (tuple(n for n in LABELS if n != a),), (('go_except', a),))
    return Task(kind, text, ((a,), (START,)), (('go_to', a), ('return', 'none')))
