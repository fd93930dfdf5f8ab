"""Fill any ROS 2 message with deterministic, non-default values (test helper)."""

import importlib

PRIMITIVES = {
    'boolean': lambda i: i % 2 == 0,
    'float': lambda i: 0.5 + i, 'double': lambda i: 0.25 + i,
    'int8': lambda i: -3 - i, 'uint8': lambda i: 7 + i, 'int16': lambda i: -300 - i,
    'uint16': lambda i: 600 + i, 'int32': lambda i: -70000 - i, 'uint32': lambda i: 70000 + i,
    'int64': lambda i: -2 ** 40 - i, 'uint64': lambda i: 2 ** 40 + i,
    'octet': lambda i: bytes([(5 + i) % 256]), 'char': lambda i: 65 + i % 26,
    'string': lambda i: f'text-{i}', 'wstring': lambda i: f'wtext-{i}',
}


def message_class(type_name: str):
    """Return the class for 'pkg/Msg' or 'pkg/msg/Msg'."""
    parts = type_name.split('/')
    pkg, name = parts[0], parts[-1]
    return getattr(importlib.import_module(f'{pkg}.msg'), name)


def fill(msg, seed: int = 0):
    """Set every field of ``msg`` to a value derived from its type and ``seed``."""
    for i, (field, ftype) in enumerate(msg.get_fields_and_field_types().items()):
        setattr(msg, field, _value(ftype, seed + i))
    return msg


def _value(ftype: str, i: int):
    if ftype.startswith('sequence<'):
        inner = ftype[len('sequence<'):-1].split(',')[0]
        return [_value(inner, i + k) for k in range(3)]
    if ftype.endswith(']') and '[' in ftype:  # fixed-size array, e.g. double[9]
        inner, n = ftype[:-1].split('[')
        return [_value(inner, i + k) for k in range(int(n))]
    base = ftype.split('<')[0]
    if base in PRIMITIVES:
        value = PRIMITIVES[base](i)
        if base == 'octet':
            return value
        return value
    return fill(message_class(ftype)(), i)
