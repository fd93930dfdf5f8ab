"""Features as every SAGE layer sees them: one sensed record, staleness, the latest per modality.

ROS-free. ``Sensed`` is what a sensing step returns (sage_sensors.sensing, the cognition
instruction step); ``staleness_factor`` is the one rule for how age lowers trust (a
sensor's own staleness and the fusing node's); ``FeatureBuffer`` keeps the newest valid
feature of each modality for memory and fusion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Features are normalised quantities; anything larger is a broken or hostile producer.
MAX_ABS_VALUE = 1e6
# A stamp this far ahead of the receiver's clock is a clock problem, not a measurement.
MAX_FUTURE_S = 0.5


@dataclass
class Sensed:
    """One feature: vector, trust in [0, 1], the quality figures behind it, its stamp."""

    vector: np.ndarray
    trust: float
    quality: dict = field(default_factory=dict)
    stamp_s: float = 0.0


def staleness_factor(age_s: float, stale_after_s: float, drop_after_s: float) -> float:
    """1 up to ``stale_after_s`` of age, falling linearly to 0 at ``drop_after_s``.

    ``stale_after_s <= 0`` turns staleness off.
    """
    if stale_after_s <= 0 or age_s <= stale_after_s:
        return 1.0
    return float(max(0.0, (drop_after_s - age_s) / (drop_after_s - stale_after_s)))


class FeatureRejected(ValueError):
    """A feature that must not reach memory or a model (wrong length, non-finite, huge)."""


def check_feature(modality: str, vector, trust: float, dim: int | None) -> np.ndarray:
    """Return ``vector`` as float32 or raise FeatureRejected saying what is wrong."""
    v = np.asarray(vector, dtype=np.float64)
    if v.ndim != 1 or (dim is not None and v.shape[0] != dim):
        raise FeatureRejected(f'{modality}: length {v.size}, expected {dim}')
    if not np.all(np.isfinite(v)) or not math.isfinite(trust):
        raise FeatureRejected(f'{modality}: NaN or Inf in feature or trust')
    if v.size and np.abs(v).max() > MAX_ABS_VALUE:
        raise FeatureRejected(f'{modality}: value {np.abs(v).max():.3g} beyond ±{MAX_ABS_VALUE:g}')
    return v.astype(np.float32)


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

    def put(self, modality: str, vector, trust: float, stamp_s: float,
            now_s: float | None = None) -> None:
        """Store a feature or raise FeatureRejected saying why.

        With ``now_s`` (the receiver's clock), a stamp more than MAX_FUTURE_S ahead is
        refused: it would never age, and every later, correctly stamped feature would
        look older than it (clocks apart, or sim time on one side only).
        """
        try:
            if modality not in self.dims:
                raise FeatureRejected(f'unknown modality {modality!r} '
                                      f'(configured: {", ".join(self.dims)})')
            if not math.isfinite(stamp_s):
                raise FeatureRejected(f'{modality}: non-finite stamp')
            if now_s is not None and stamp_s > now_s + MAX_FUTURE_S:
                raise FeatureRejected(
                    f'{modality}: stamped {stamp_s - now_s:.3g} s in the future (clocks '
                    f'apart? use_sim_time set on some nodes only?)')
            v = check_feature(modality, vector, trust, self.dims[modality])
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
        return item.trust * staleness_factor(self.age_s(modality, now_s),
                                             self.stale_after[modality],
                                             self.drop_after[modality])

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
