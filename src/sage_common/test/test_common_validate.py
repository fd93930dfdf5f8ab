"""Boundary validation of message text: JSON and the world's layout."""

import pytest
from sage_common.validate import parse_json, world_layout


def test_json_that_is_long_deep_or_not_a_number_is_refused_with_a_reason():
    assert parse_json('{"episode": 3}') == {'episode': 3}
    with pytest.raises(ValueError, match='nested too deeply'):
        parse_json('[' * 100_000 + ']' * 100_000)
    with pytest.raises(ValueError, match='longer than'):
        parse_json('"' + 'a' * 2_000_000 + '"')
    with pytest.raises(ValueError, match='NaN'):
        parse_json('{"x": NaN}')
    with pytest.raises(ValueError):
        parse_json('{')


def test_layout_objects_must_be_finite():
    good = '{"objects": [{"x": 1, "y": 2, "radius": 0.2, "rgb": [1, 0, 0]}]}'
    assert world_layout(good)['objects'][0]['x'] == 1
    for bad in ('[]', '{"objects": 3}', '{"objects": [{"x": 1}]}',
                '{"objects": [{"x": 1e300, "y": 2, "radius": 0.2, "rgb": [1, 0, 0]}]}'):
        with pytest.raises(ValueError):
            world_layout(bad)
