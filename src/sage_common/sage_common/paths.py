"""Where SAGE keeps its data: paths relative to $SAGE_HOME, and containment under a root."""

from __future__ import annotations

import os


def sage_home() -> str:
    """$SAGE_HOME, or ~/.sage when unset."""
    return os.environ.get('SAGE_HOME') or os.path.join(os.path.expanduser('~'), '.sage')


def resolve_path(path: str) -> str:
    """Resolve a relative data path against $SAGE_HOME; absolute stays, '' stays ''."""
    if not path or os.path.isabs(path):
        return path
    return os.path.join(sage_home(), path)


def inside(path: str, root: str) -> bool:
    """Whether ``path`` (symbolic links resolved) lies under the directory ``root``."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real, base]) == base
