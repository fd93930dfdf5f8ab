"""Cheap, fixed feature extractors and trust estimators for camera, microphone and IMU.

ROS-free. Each extractor turns one raw reading into a fixed-length float32
vector, a trust in [0, 1] and the quality figures behind that trust, so nodes,
bag replays and offline training produce identical features:

``VisionFeatures.encode(image, now_s)``  H×W×3 uint8 (any size) -> DIM floats
``AudioFeatures.encode(samples, rate, now_s)``  int16 mono -> DIM floats
``ImuFeatures.encode(accel, gyro, now_s)``  m/s², rad/s -> DIM floats (windowed)
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


class VisionFeatures:
    """A colour/structure profile over vertical strips plus global image statistics.

    Per strip (``STRIPS`` across the width): mean r, g, b of the middle band and
    the luminance contrast of the column. Globally: brightness, contrast,
    log Laplacian variance (sharpness) and the clipped-pixel fraction. Trust
    falls with blur, bad exposure, clipping and frozen frames.
    """

    STRIPS = 16
    DIM = STRIPS * 4 + 4

    def __init__(self, frozen_after: int = 3):
        self.frozen_after = frozen_after
        self._prev = None
        self._same = 0
        self._sharp_ref = None   # running reference of sharpness, adapts to the scene

    def encode(self, image: np.ndarray, now_s: float = 0.0):
        """Return (feature, trust, quality) for one RGB image."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f'expected H×W×3 uint8, got {image.shape} {image.dtype}')
        img = image.astype(np.float32) / 255.0
        h, w, _ = img.shape
        lum = img.mean(axis=2)
        band = img[h // 4: 3 * h // 4]
        cols = np.array_split(np.arange(w), self.STRIPS)
        strips = np.stack([np.concatenate([band[:, c].mean(axis=(0, 1)),
                                           [lum[:, c].std()]]) for c in cols])
        lap = (4 * lum[1:-1, 1:-1] - lum[:-2, 1:-1] - lum[2:, 1:-1] - lum[1:-1, :-2]
               - lum[1:-1, 2:])
        sharp = float(np.log10(lap.var() + 1e-8))
        clipped = float(((image == 0) | (image == 255)).all(axis=2).mean())
        brightness, contrast = float(lum.mean()), float(lum.std())
        feature = np.concatenate([strips.ravel(), [brightness, contrast, sharp / 8 + 1, clipped]])

        small = lum[::4, ::4]
        if self._prev is not None and self._prev.shape == small.shape and \
                np.abs(small - self._prev).mean() < 1e-4:
            self._same += 1
        else:
            self._same = 0
        self._prev = small
        if self._sharp_ref is None or sharp > self._sharp_ref:
            self._sharp_ref = sharp
        else:
            self._sharp_ref += 0.01 * (sharp - self._sharp_ref)
        blur = _clip01((self._sharp_ref - sharp) / 2.0)        # decades below reference
        exposure = _clip01(1 - max(0.0, 0.08 - brightness) / 0.08
                           - max(0.0, brightness - 0.92) / 0.08)
        frozen = 1.0 if self._same >= self.frozen_after else 0.0
        trust = (1 - blur) * exposure * (1 - clipped) * (1 - frozen)
        quality = {'blur': blur, 'brightness': brightness, 'clipped_fraction': clipped,
                   'frozen': frozen, 'sharpness_log10': sharp}
        return feature.astype(np.float32), _clip01(trust), quality


class AudioFeatures:
    """Log band energies (``BANDS`` log-spaced 100-6000 Hz), level and voicing.

    Trust falls with clipping, dropouts (digital silence) and a low SNR against
    a running noise floor.
    """

    BANDS = 16
    DIM = BANDS + 2

    def __init__(self):
        self._noise_db = None

    def encode(self, samples: np.ndarray, rate: int, now_s: float = 0.0):
        """Return (feature, trust, quality) for one mono int16 chunk."""
        if samples.dtype != np.int16 or samples.ndim != 1 or len(samples) < 32:
            raise ValueError(f'expected ≥32 mono int16 samples, got {samples.shape} '
                             f'{samples.dtype}')
        x = samples.astype(np.float32) / 32768.0
        spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
        freqs = np.fft.rfftfreq(len(x), 1.0 / rate)
        edges = np.geomspace(100, min(6000, rate / 2), self.BANDS + 1)
        idx = np.clip(np.searchsorted(freqs, edges), 0, len(freqs))
        bands = np.array([spectrum[a:max(b, a + 1)].sum() for a, b in zip(idx[:-1], idx[1:])])
        log_bands = np.log10(bands + 1e-10) / 10 + 1
        rms = float(np.sqrt(np.mean(x ** 2)))
        level_db = 20 * math.log10(rms + 1e-9)
        peak_share = float(bands.max() / (bands.sum() + 1e-12))   # tonal/voiced energy
        feature = np.concatenate([log_bands, [level_db / 100 + 1, peak_share]])
        dropout = 1.0 if not samples.any() else 0.0
        clipped = float((np.abs(samples.astype(np.int32)) >= 32767).mean())
        if not dropout:
            if self._noise_db is None or level_db < self._noise_db:
                self._noise_db = level_db
            else:
                self._noise_db += 0.01 * (level_db - self._noise_db)
        snr_db = level_db - (self._noise_db if self._noise_db is not None else level_db)
        trust = (1 - dropout) * (1 - min(1.0, 20 * clipped))
        quality = {'dropout': dropout, 'clipped_fraction': clipped, 'snr_db': snr_db,
                   'level_dbfs': level_db}
        return feature.astype(np.float32), _clip01(trust), quality


class ImuFeatures:
    """Windowed IMU statistics: mean and std of accel and gyro axes, and magnitudes.

    Trust falls when readings sit at a saturation limit, when variance jumps far
    above its running level, and when the gyro's rest bias drifts.
    """

    DIM = 14

    def __init__(self, window: int = 10, accel_range: float = 2 * 9.80665,
                 gyro_range: float = 4.36):
        self.buf = deque(maxlen=window)
        self.accel_range, self.gyro_range = accel_range, gyro_range
        self._var_ref = None

    def encode(self, accel, gyro, now_s: float = 0.0):
        """Return (feature, trust, quality) after adding one sample."""
        a, g = np.asarray(accel, np.float32), np.asarray(gyro, np.float32)
        if a.shape != (3,) or g.shape != (3,) or not (np.isfinite(a).all()
                                                      and np.isfinite(g).all()):
            raise ValueError('expected finite 3-vectors for accel and gyro')
        self.buf.append(np.concatenate([a, g]))
        win = np.stack(self.buf)
        mean, std = win.mean(axis=0), win.std(axis=0)
        feature = np.concatenate([mean[:3] / 9.81, mean[3:], std[:3] / 9.81, std[3:],
                                  [np.linalg.norm(mean[:3]) / 9.81,
                                   np.linalg.norm(mean[3:])]])
        # saturation: a reading pinned at a range limit for the whole window
        near = np.concatenate([np.abs(win[:, :3]) >= 0.98 * self.accel_range,
                               np.abs(win[:, 3:]) >= 0.98 * self.gyro_range], axis=1)
        recent = win[-3:]
        pinned = np.isclose(recent, recent[-1:], atol=1e-6).all(axis=0) & (len(win) >= 3)
        saturated = float((near[-1] | (pinned & (np.abs(win[-1]) > 0.05))).any())
        var = float(std.sum())
        anomaly = 0.0
        if len(win) == self.buf.maxlen:     # judge variance only on full windows
            if self._var_ref is None:
                self._var_ref = var
            anomaly = _clip01((var / (self._var_ref + 0.05) - 5.0) / 10.0)
            self._var_ref = 0.98 * self._var_ref + 0.02 * var
        trust = (1 - 0.8 * saturated) * (1 - anomaly)
        quality = {'saturated': saturated, 'variance_anomaly': anomaly}
        return feature.astype(np.float32), _clip01(trust), quality
