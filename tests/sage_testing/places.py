"""Places vectors written by hand, in the memory's layout (sage_common.places_layout)."""

import math

import numpy as np
from sage_common.places_layout import FIELDS, RANGE_SCALE_M, TOKEN_DIM


def places(*seen, frontier=None, max_tokens: int = 12) -> np.ndarray:
    """Return a places vector with a token per (label, x, y) in base_link, nearest first."""
    from sage_cognition.embedding import embed
    tokens = np.zeros((max_tokens, TOKEN_DIM), np.float32)
    for token, (label, x, y) in zip(tokens, seen):
        token[:4] = (1.0, x / math.hypot(x, y), y / math.hypot(x, y),
                     math.hypot(x, y) / RANGE_SCALE_M)
        token[len(FIELDS):] = embed(label)
    if frontier is not None:
        tokens[len(seen), :4] = (1.0, 1.0, 0.0, frontier / RANGE_SCALE_M)
        tokens[len(seen), FIELDS.index('frontier')] = 1.0
    return tokens.reshape(-1)
