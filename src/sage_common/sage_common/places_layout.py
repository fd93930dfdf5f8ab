"""The places feature's layout: the contract between the memory that writes it and its readers.

``sage_memory.places`` writes one token per remembered landmark and one for the frontier
(see its module doc); the coherence model, the planner teacher and the cognition node's
plan follower read them. The layout lives here so that readers need not import the
memory.
"""

from __future__ import annotations

import math

import numpy as np

FIELDS = ('valid', 'cos', 'sin', 'range', 'confidence', 'age', 'seen', 'in_view', 'frontier',
          'via_cos', 'via_sin', 'path')
EMBED_DIM = 384
TOKEN_DIM = len(FIELDS) + EMBED_DIM
RANGE_SCALE_M = 8.0          # a token's range is metres over this


def landmarks(vector, label_vectors: dict, range_scale_m: float = RANGE_SCALE_M) -> list:
    """Return the remembered landmarks as (label, x, y) in ``base_link``, nearest first.

    ``label_vectors`` maps the labels to read to their sentence embeddings; a token
    takes the label whose embedding is its own (tokens of other labels, the frontier
    and empty tokens are skipped). Raises ValueError when the vector is not whole tokens.
    """
    v = np.asarray(vector, np.float32).reshape(-1)
    if v.size % TOKEN_DIM:
        raise ValueError(f'a places vector is whole tokens of {TOKEN_DIM} numbers, '
                         f'got {v.size}')
    names = list(label_vectors)
    if not names:
        return []
    table = np.stack([np.asarray(label_vectors[n], np.float32) for n in names])
    valid, cos, sin, rng, frontier = (FIELDS.index(f) for f in
                                      ('valid', 'cos', 'sin', 'range', 'frontier'))
    out = []
    for t in v.reshape(-1, TOKEN_DIM):
        if t[valid] < 0.5 or t[frontier] > 0.5:
            continue
        match = table @ t[len(FIELDS):]
        if match.max() < 0.95:          # a place of another label (pillar, the start)
            continue
        label = names[int(np.argmax(match))]
        r = float(t[rng]) * range_scale_m
        angle = math.atan2(float(t[sin]), float(t[cos]))
        out.append((label, r * math.cos(angle), r * math.sin(angle)))
    return out
