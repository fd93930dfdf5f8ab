"""The sidecar: a constant-size, salience-gated fast-weight memory.

ROS-free. Two low-rank matrices hold everything: slot keys U (d×r) and slot
values V (d_v×r). An input vector x (any fixed length) becomes a key
k = normalise(P·x) through a fixed random projection P that is saved with the
memory, so a memory reloaded in another process keys the same way.

Read:   a = topk_softmax(Uᵀk / T);  readout = V·a;  confidence = max cosine(k, U).
Write:  gated by salience g in [0, 1]. A key close to a slot (cosine ≥ ``merge``)
        moves that slot towards (k, v) by g (Hebbian); a new key replaces the
        slot with the least usage, if the event is more salient than what that
        slot holds (salient memories are not crowded out by routine ones).
        Usage decays every step (``decay``), and so, slower, does the strength
        of what each slot holds (``forget``): old, unrecalled memories give way,
        and a memory full of salient events still takes new ones in time.
Trace:  an eligibility trace of the keys of recent routine steps (salience
        below ``bind_gate``: not committed as events of their own). The next
        salient event also writes (trace key -> the event's value) at half
        strength, binding what led up to it to it, and clears the trace.

Save/load: one .npz (no pickle) with a JSON header (format version, sizes,
sha256 of the arrays), written to a temporary file and renamed into place.
"""

from __future__ import annotations

import time

import numpy as np
from sage_common import snapshot

FORMAT = 'sage-sidecar'
VERSION = 1
_ARRAYS = ('P', 'U', 'V', 'usage', 'strength', 'trace')


class SidecarError(snapshot.SnapshotError):
    """A snapshot is missing, corrupted or of another layout; the message says which."""


def _unit(x: np.ndarray) -> np.ndarray:
    n = float(np.sqrt(x @ x))
    return x / n if n > 1e-12 else x


class Sidecar:
    """See the module doc. ``input_dim`` is the length of the vectors written and read."""

    def __init__(self, input_dim: int, d: int = 256, r: int = 64, value_dim: int | None = None,
                 temperature: float = 0.05, topk: int = 4, merge: float = 0.9,
                 decay: float = 1e-3, trace_decay: float = 0.8, bind_gate: float = 0.5,
                 forget: float = 1e-4, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.input_dim, self.d, self.r = int(input_dim), int(d), int(r)
        self.value_dim = int(value_dim or input_dim)
        if min(self.input_dim, self.d, self.r, self.value_dim, int(topk)) < 1:
            raise ValueError('sidecar sizes and topk must be at least 1')
        self.temperature, self.topk, self.merge = float(temperature), int(topk), float(merge)
        self.decay, self.trace_decay, self.bind_gate = float(decay), float(trace_decay), \
            float(bind_gate)
        self.forget = float(forget)
        self.P = (rng.standard_normal((self.d, self.input_dim)) /
                  np.sqrt(self.d)).astype(np.float32)
        self.U = np.zeros((self.d, self.r), np.float32)
        self.V = np.zeros((self.value_dim, self.r), np.float32)
        self.usage = np.zeros(self.r, np.float32)      # decays; refreshed by recall and write
        self.strength = np.zeros(self.r, np.float32)   # salience of what each slot holds
        self.trace = np.zeros(self.d, np.float32)
        self.writes = 0

    # ------------------------------------------------------------------ keys
    def key(self, x) -> np.ndarray:
        """Project an input vector to a unit key."""
        x = np.asarray(x, np.float32)
        if x.shape != (self.input_dim,):
            raise ValueError(f'expected a vector of {self.input_dim}, got shape {x.shape}')
        if not np.isfinite(x).all():
            raise ValueError('vector contains NaN or Inf')
        return _unit(self.P @ x)

    def as_key(self, k) -> np.ndarray:
        """Validate and normalise a ready-made key of length d."""
        k = np.asarray(k, np.float32)
        if k.shape != (self.d,) or not np.isfinite(k).all():
            raise ValueError(f'a key must be {self.d} finite floats, got shape {k.shape}')
        return _unit(k)

    # ------------------------------------------------------------------ read
    def read(self, x=None, key: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """Return (readout [value_dim], confidence in [0, 1]) for an input or a key."""
        k = self.key(x) if key is None else key
        return self._read(self.U.T @ k)

    def _read(self, sims: np.ndarray) -> tuple[np.ndarray, float]:
        live = self.strength > 0                         # slots are unit vectors (or zero)
        if not live.any():
            return np.zeros(self.value_dim, np.float32), 0.0
        logits = np.where(live, sims / self.temperature, -np.inf)
        top = np.argpartition(-logits, min(self.topk, self.r) - 1)[:self.topk]
        z = logits[top]
        best = z.max()
        w = np.exp(z - best)                             # dead slots: exp(-inf) = 0
        w /= w.sum()
        self.usage[top] += w                             # recalled memories stay
        return self.V[:, top] @ w, min(1.0, max(0.0, float(best) * self.temperature))

    # ------------------------------------------------------------------ write
    def step(self, x, value, salience: float) -> tuple[np.ndarray, float]:
        """One time step: recall for ``x``, then write (x -> value); return the recall."""
        k = self.key(x)
        sims = self.U.T @ k                              # shared by the read and the write
        recalled = self._read(sims)
        self.write(None, value, salience, key=k, sims=sims)
        return recalled

    def write(self, x, value, salience: float, key: np.ndarray | None = None,
              sims: np.ndarray | None = None) -> int | None:
        """Store (x -> value) gated by ``salience``; return the slot written, or None."""
        k, v = (self.key(x) if key is None else key), np.asarray(value, np.float32)
        if v.shape != (self.value_dim,) or not np.isfinite(v).all():
            raise ValueError(f'value must be {self.value_dim} finite floats')
        if not np.isfinite(salience):
            raise ValueError('salience is NaN or Inf')
        g = min(1.0, max(0.0, float(salience)))
        self.usage *= 1.0 - self.decay
        self.strength *= 1.0 - self.forget
        slot = self._write_key(k, v, g, sims)
        if g < self.bind_gate:                          # routine: may lead up to an event
            self.trace *= self.trace_decay
            self.trace += k
        elif self.trace.any():                          # the event: bind its lead-up to it
            self._write_key(_unit(self.trace), v, 0.5 * g)
            self.trace[:] = 0.0
        return slot

    def _write_key(self, k, v, g, sims=None) -> int | None:
        if g <= 0:
            return None
        sims = self.U.T @ k if sims is None else sims
        j = int(np.argmax(sims))
        if self.strength[j] > 0 and sims[j] >= self.merge:   # the same memory: reinforce it
            self.U[:, j] = _unit((1 - g) * self.U[:, j] + g * k)
            self.V[:, j] = (1 - g) * self.V[:, j] + g * v
            self.strength[j] = max(self.strength[j], g)
        else:                                               # a new memory: take a weak slot
            weakness = self.strength * (0.5 + self.usage / (1.0 + self.usage))
            j = int(np.argmin(weakness))
            if self.strength[j] > g:
                return None                                # everything held is more salient
            self.U[:, j], self.V[:, j], self.strength[j] = k, v, g
        self.usage[j] += 1.0
        self.writes += 1
        return j

    @property
    def fill(self) -> float:
        """Fraction of slots in use."""
        return float((self.strength > 0).mean())

    @property
    def nbytes(self) -> int:
        """Bytes held by the memory's arrays (constant whatever the run length)."""
        return int(sum(getattr(self, n).nbytes for n in _ARRAYS))

    # ------------------------------------------------------------------ persistence
    def _header(self) -> dict:
        return {'format': FORMAT, 'version': VERSION, 'input_dim': self.input_dim,
                'd': self.d, 'r': self.r, 'value_dim': self.value_dim,
                'temperature': self.temperature, 'topk': self.topk, 'merge': self.merge,
                'decay': self.decay, 'trace_decay': self.trace_decay,
                'bind_gate': self.bind_gate, 'forget': self.forget, 'writes': self.writes,
                'saved': time.time()}

    def save(self, path: str) -> str:
        """Write atomically (temporary file, fsync, rename); return the path."""
        return snapshot.save(path, self._header(), {n: getattr(self, n) for n in _ARRAYS})

    @classmethod
    def load(cls, path: str) -> 'Sidecar':
        """Load a snapshot; raise SidecarError if it is missing, corrupted or foreign."""
        try:
            header, arrays = snapshot.load(path, FORMAT, VERSION, _ARRAYS)
        except snapshot.SnapshotError as exc:
            raise SidecarError(str(exc)) from exc
        try:
            mem = cls(**{k: header[k] for k in _SIZES},
                      **{k: header[k] for k in _SETTINGS if k in header})
            for n, a in arrays.items():
                want = getattr(mem, n).shape
                if a.shape != want:
                    raise ValueError(f'array {n} has shape {a.shape}, the header says {want}')
                setattr(mem, n, a.astype(np.float32))
            mem.writes = int(header['writes'])
        except (KeyError, TypeError, ValueError) as exc:
            raise SidecarError(f'{path}: inconsistent snapshot ({exc!r})') from exc
        return mem


_SIZES = ('input_dim', 'd', 'r', 'value_dim')
_SETTINGS = ('temperature', 'topk', 'merge', 'decay', 'trace_decay', 'bind_gate', 'forget')
