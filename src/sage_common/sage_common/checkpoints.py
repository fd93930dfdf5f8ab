"""Versioned model checkpoints that are never half-written and never lost.

Layout of a model directory (one per model: coherence, vision_encoder, lora)::

    <root>/<model>/
        v0001/ weights.pt  meta.json    # meta.json: version, sha256, metrics, config
        v0002/ ...
        latest -> v0002                 # a symlink, switched with an atomic rename
        .tmp-*/                         # a commit in progress (ignored, cleaned up)

A version directory is written under a temporary name, fsynced and renamed into
place, so a reader sees either the whole version or none. The ``latest``
pointer moves only after that. Version 1 is the base model: never pruned.
Weights are saved with torch.save and loaded with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

WEIGHTS, META, LATEST = 'weights.pt', 'meta.json', 'latest'
_VERSION_RE = re.compile(r'^v(\d{4,})$')


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or corrupted; the message says which and why."""


@dataclass
class Checkpoint:
    """A committed, verified model version."""

    path: str
    version: int
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def weights_path(self) -> str:
        """Path of the weights file."""
        return os.path.join(self.path, WEIGHTS)


def sha256_file(path: str) -> str:
    """Return the hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def superseded(path: str) -> bool:
    """Tell whether ``path`` is a version of a store whose ``latest`` now points elsewhere.

    Nodes follow the store's ``latest``, not the version number of an announcement: a
    latched announcement re-delivered after a respawn (or a late one) is superseded,
    while a rollback (``latest`` pointed back, then announced) is not. A directory that
    is not a store version (a bare adapter folder) is never superseded.
    """
    link = os.path.join(os.path.dirname(os.path.normpath(path)), LATEST)
    return os.path.lexists(link) and os.path.realpath(link) != os.path.realpath(path)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointStore:
    """Commit, list, load and roll back versions of one model."""

    def __init__(self, root: str, model: str, keep: int = 5):
        if keep < 2:
            raise ValueError('keep must be >= 2 (the base and the latest version)')
        self.dir = os.path.join(root, model)
        self.model = model
        self.keep = keep
        os.makedirs(self.dir, exist_ok=True)

    # -------------------------------------------------------------- reading
    def versions(self) -> list[int]:
        """Return committed version numbers, oldest first."""
        found = []
        for name in os.listdir(self.dir):
            m = _VERSION_RE.match(name)
            if m and os.path.isfile(os.path.join(self.dir, name, META)):
                found.append(int(m.group(1)))
        return sorted(found)

    def latest_version(self) -> int | None:
        """Return the version ``latest`` points at, or None if nothing is committed."""
        link = os.path.join(self.dir, LATEST)
        if not os.path.islink(link):
            return None
        m = _VERSION_RE.match(os.readlink(link))
        return int(m.group(1)) if m else None

    def open(self, version: int | None = None) -> Checkpoint:
        """Return a verified checkpoint (default: latest); raise CheckpointError if bad."""
        version = self.latest_version() if version is None else version
        if version is None:
            raise CheckpointError(f'no committed {self.model} checkpoint in {self.dir}')
        path = os.path.join(self.dir, f'v{version:04d}')
        try:
            with open(os.path.join(path, META)) as f:
                meta = json.load(f)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f'{path}: unreadable {META}: {exc}') from exc
        weights = os.path.join(path, WEIGHTS)
        if not os.path.isfile(weights):
            raise CheckpointError(f'{path}: {WEIGHTS} is missing')
        digest = sha256_file(weights)
        if digest != meta.get('sha256'):
            raise CheckpointError(f'{path}: {WEIGHTS} does not match its recorded sha256 '
                                  f'(file corrupted or partly written); refusing it')
        return Checkpoint(path=path, version=version, sha256=digest, meta=meta)

    def load_state(self, checkpoint: Checkpoint) -> dict[str, Any]:
        """Load the weights of a verified checkpoint (no pickle code execution)."""
        import torch
        try:
            return torch.load(checkpoint.weights_path, map_location='cpu', weights_only=True)
        except Exception as exc:
            raise CheckpointError(f'{checkpoint.path}: cannot load weights: {exc}') from exc

    # -------------------------------------------------------------- writing
    def commit(self, state: dict[str, Any], meta: dict[str, Any] | None = None) -> Checkpoint:
        """Write ``state`` as the next version and point ``latest`` at it."""
        import torch
        self.clean_partial()
        version = (self.versions() or [0])[-1] + 1
        final = os.path.join(self.dir, f'v{version:04d}')
        tmp = os.path.join(self.dir, f'.tmp-v{version:04d}-{os.getpid()}')
        os.makedirs(tmp)
        weights = os.path.join(tmp, WEIGHTS)
        with open(weights, 'wb') as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        record = dict(meta or {})
        record.update(version=version, model=self.model, sha256=sha256_file(weights),
                      created=time.time(), parent=self.latest_version())
        with open(os.path.join(tmp, META), 'w') as f:
            json.dump(record, f, indent=1, default=float)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(self.dir)
        self.point_latest(version)
        self.prune()
        return self.open(version)

    def point_latest(self, version: int) -> None:
        """Switch ``latest`` to ``version`` atomically (rollback uses this too)."""
        if version not in self.versions():
            raise CheckpointError(f'{self.model}: version {version} is not committed')
        tmp_link = os.path.join(self.dir, f'.tmp-latest-{os.getpid()}')
        if os.path.lexists(tmp_link):
            os.remove(tmp_link)
        os.symlink(f'v{version:04d}', tmp_link)
        os.replace(tmp_link, os.path.join(self.dir, LATEST))
        _fsync_dir(self.dir)

    def clean_partial(self) -> list[str]:
        """Remove leftovers of commits that were interrupted (e.g. by kill -9)."""
        removed = []
        for name in os.listdir(self.dir):
            if name.startswith('.tmp-'):
                path = os.path.join(self.dir, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)
                removed.append(name)
        return removed

    def prune(self) -> None:
        """Keep the base (v1), the latest, and the newest ``keep`` versions."""
        versions = self.versions()
        protected = {versions[0] if versions else None, self.latest_version()}
        for version in versions[:-self.keep]:
            if version not in protected:
                shutil.rmtree(os.path.join(self.dir, f'v{version:04d}'), ignore_errors=True)
