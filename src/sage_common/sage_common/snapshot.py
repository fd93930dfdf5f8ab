"""Atomic, verified snapshots of named numpy arrays (the sidecar, the spatial memory).

``save`` writes a JSON header (with a format name, a version and the arrays' SHA-256)
and the arrays into one .npz through a temporary file, fsync and rename, so a kill
at any moment leaves the previous snapshot or the new one, never half of one.
``load`` refuses a file that is missing, unreadable, of another format or version, or
whose arrays do not match their digest, with ``SnapshotError`` saying which.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import time

import numpy as np


class SnapshotError(ValueError):
    """A snapshot cannot be used; the message says why."""


def digest(arrays: dict) -> str:
    """SHA-256 over the arrays' bytes, in the dict's order."""
    h = hashlib.sha256()
    for a in arrays.values():
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def save(path: str, header: dict, arrays: dict) -> str:
    """Write ``header`` (plus the arrays' sha256) and ``arrays`` atomically; return path."""
    header = dict(header, sha256=digest(arrays))
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp-{os.getpid()}'
    with open(tmp, 'wb') as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)                  # the rename itself survives a power cut
    finally:
        os.close(fd)
    return path


def load(path: str, fmt: str, version: int, names) -> tuple[dict, dict]:
    """Return (header, arrays) of the snapshot at ``path``; SnapshotError if unusable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(bytes(z['header']).decode())
            arrays = {n: z[n] for n in names}
    except FileNotFoundError:
        raise SnapshotError(f'no {fmt} snapshot at {path}') from None
    except Exception as exc:
        raise SnapshotError(f'{path} is not a readable {fmt} snapshot ({exc})') from exc
    if not isinstance(header, dict) or header.get('format') != fmt \
            or header.get('version') != version:
        got = header if not isinstance(header, dict) else \
            f'{header.get("format")} v{header.get("version")}'
        raise SnapshotError(f'{path}: format {got}, this SAGE reads {fmt} v{version}')
    if digest(arrays) != header.get('sha256'):
        raise SnapshotError(f'{path}: arrays do not match their recorded sha256 (corrupted)')
    return header, arrays


def restore(path: str, load) -> tuple:
    """Return (``load(path)``, '') if a snapshot is there and usable, else (None, note).

    Leftovers of interrupted saves are removed; a snapshot that ``load`` refuses with
    SnapshotError is moved aside to ``<path>.corrupt-<time>`` (kept for a post-mortem,
    never loaded again) and the note says so.
    """
    remove_partial(path)
    if not os.path.exists(path):
        return None, ''
    try:
        return load(path), ''
    except SnapshotError as exc:
        aside = f'{path}.corrupt-{int(time.time())}'
        os.replace(path, aside)
        return None, f'snapshot refused: {exc}; moved to {aside}'


def remove_partial(path: str) -> None:
    """Delete the temporary files of saves that a kill cut short."""
    for stale in glob.glob(glob.escape(path) + '.tmp-*'):
        os.remove(stale)
