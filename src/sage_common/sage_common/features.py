"""The latest feature of each modality, with its age, as the coherence model sees it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


class FeatureRejected(ValueError):
    """A feature that must not reach the model (wrong length, NaN/Inf, bad trust)."""


@dataclass
class Latest:
    """One modality's most recent feature."""

    vector: np.ndarray
    trust: float
    stamp_s: float      # when it was observed (node clock, seconds)


class FeatureBuffer:
    """Keep the newest valid feature per modality; stale features lose trust.

    ``dims`` fixes each modality's vector length; anything else is rejected, so
    a misconfigured producer cannot silently corrupt the fused state. Trust
    decays linearly from ``stale_after_s`` to zero at ``drop_after_s``.
    """

    def __init__(self, dims: dict[str, int], stale_after_s: float = 0.5,
                 drop_after_s: float = 2.0):
        if not 0 < stale_after_s < drop_after_s:
            raise ValueError('need 0 < stale_after_s < drop_after_s')
        self.dims = dict(dims)
        self.stale_after = {m: stale_after_s for m in self.dims}
        self.drop_after = {m: drop_after_s for m in self.dims}
        self.latest: dict[str, Latest] = {}
        self.rejected = 0

    def set_lifetime(self, modality: str, stale_after_s: float, drop_after_s: float) -> None:
        """Give one modality its own staleness (e.g. a plan stays valid for minutes)."""
        if not 0 < stale_after_s < drop_after_s:
            raise ValueError('need 0 < stale_after_s < drop_after_s')
        self.stale_after[modality], self.drop_after[modality] = stale_after_s, drop_after_s

    def put(self, modality: str, vector, trust: float, stamp_s: float) -> None:
        """Store a feature or raise FeatureRejected saying why."""
        try:
            if modality not in self.dims:
                raise FeatureRejected(f'unknown modality {modality!r} '
                                      f'(configured: {", ".join(self.dims)})')
            v = np.asarray(vector, dtype=np.float32)
            if v.shape != (self.dims[modality],):
                raise FeatureRejected(f'{modality}: length {v.size}, expected '
                                      f'{self.dims[modality]}')
            if not np.all(np.isfinite(v)) or not math.isfinite(trust):
                raise FeatureRejected(f'{modality}: NaN or Inf in feature or trust')
        except FeatureRejected:
            self.rejected += 1
            raise
        prev = self.latest.get(modality)
        if prev is None or stamp_s >= prev.stamp_s:
            self.latest[modality] = Latest(v, float(min(1.0, max(0.0, trust))), stamp_s)

    def age_s(self, modality: str, now_s: float) -> float:
        """Age of a modality's feature (inf when never seen)."""
        item = self.latest.get(modality)
        return math.inf if item is None else max(0.0, now_s - item.stamp_s)

    def effective_trust(self, modality: str, now_s: float) -> float:
        """Return the reported trust scaled down by staleness (0 when missing or dropped)."""
        item = self.latest.get(modality)
        if item is None:
            return 0.0
        age, stale, drop = (self.age_s(modality, now_s), self.stale_after[modality],
                            self.drop_after[modality])
        if age <= stale:
            return item.trust
        return item.trust * max(0.0, (drop - age) / (drop - stale))

    def snapshot(self, now_s: float):
        """Return (vectors, trust, age) arrays in ``dims`` order; missing ones are zero."""
        vectors = {m: (self.latest[m].vector if m in self.latest
                       and self.age_s(m, now_s) < self.drop_after[m]
                       else np.zeros(d, np.float32)) for m, d in self.dims.items()}
        trust = np.array([self.effective_trust(m, now_s) for m in self.dims], np.float32)
        age = np.array([min(self.age_s(m, now_s), self.drop_after[m]) for m in self.dims],
                       np.float32)
        return vectors, trust, age

    def newest_stamp(self) -> float | None:
        """Stamp of the most recent feature of any modality."""
        return max((x.stamp_s for x in self.latest.values()), default=None)
