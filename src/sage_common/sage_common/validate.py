"""Validation at the boundary for text that arrives in messages.

ROS-free. Nodes call these on every String they parse, so a malformed, huge or deeply
nested payload is rejected with a reason instead of reaching the code behind it.
"""

from __future__ import annotations

import json
import math

MAX_JSON_CHARS = 1_000_000


def parse_json(text: str, max_chars: int = MAX_JSON_CHARS):
    """Parse JSON text; ValueError saying why for too long, nested too deep, or malformed."""
    if len(text) > max_chars:
        raise ValueError(f'JSON of {len(text)} characters is longer than {max_chars}')
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError('JSON nested too deeply') from None


def _refuse_constant(name: str):
    raise ValueError(f'JSON holds {name}, which is not a number')


def world_layout(text: str) -> dict:
    """Parse the world's layout message: objects with finite x, y, radius and an rgb."""
    layout = parse_json(text)
    if not isinstance(layout, dict) or not isinstance(layout.get('objects', []), list):
        raise ValueError('the layout must be an object with an "objects" list')
    for obj in layout.get('objects', []):
        try:
            values = [float(obj['x']), float(obj['y']), float(obj['radius']),
                      *map(float, list(obj['rgb'])[:3])]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f'bad object in the layout: {exc}') from None
        if not all(math.isfinite(v) and abs(v) < 1e6 for v in values):
            raise ValueError('layout object with a non-finite or absurd value')
    return layout
