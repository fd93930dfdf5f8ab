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

import cv2
import numpy as np


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


class VisionFeatures:
    """A colour/structure profile over vertical strips plus global image statistics.

    Per strip (``STRIPS`` across the width): mean r, g, b of the middle band and
    the luminance contrast of the column. Globally: brightness, contrast,
    log Laplacian variance (sharpness) and the clipped-pixel fraction. Trust
    falls with blur, bad exposure, clipping and frozen frames. Images wider than
    ``WORK_WIDTH`` are first area-averaged down to it, so a 640×480 camera costs
    what the built-in world's 160×120 one does and sharpness is judged at one scale.
    """

    STRIPS = 16
    DIM = STRIPS * 4 + 4
    WORK_WIDTH = 160

    def __init__(self, frozen_after: int = 3):
        self.frozen_after = frozen_after
        self._prev = None
        self._same = 0
        self._sharp_ref = None   # running reference of sharpness, adapts to the scene

    def encode(self, image: np.ndarray, now_s: float = 0.0):
        """Return (feature, trust, quality) for one RGB image."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f'expected H×W×3 uint8, got {image.shape} {image.dtype}')
        if image.shape[1] > self.WORK_WIDTH:
            h = max(1, round(image.shape[0] * self.WORK_WIDTH / image.shape[1]))
            image = cv2.resize(image, (self.WORK_WIDTH, h), interpolation=cv2.INTER_AREA)
        img = image.astype(np.float32) * (1.0 / 255.0)
        h, w, _ = img.shape
        lum = img.mean(axis=2)
        if w < self.STRIPS or h < 4:
            raise ValueError(f'image {w}x{h} is too small (needs at least {self.STRIPS}x4)')
        # each strip: mean colour of the middle band and contrast of its columns
        edges = np.linspace(0, w, self.STRIPS + 1).round().astype(int)
        rgb = np.add.reduceat(img[h // 4: 3 * h // 4].mean(axis=0), edges[:-1], axis=0)
        rgb /= np.diff(edges)[:, None]
        contrast = [lum[:, a:b].std() for a, b in zip(edges[:-1], edges[1:])]
        strips = np.concatenate([rgb, np.asarray(contrast)[:, None]], axis=1)
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

    Trust falls with clipping and dropouts (digital silence); the SNR room above
    the noise floor is the microphone sensing step's (sage_sensors.sensing).
    """

    BANDS = 16
    DIM = BANDS + 2

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
        trust = (1 - dropout) * (1 - min(1.0, 20 * clipped))
        quality = {'dropout': dropout, 'clipped_fraction': clipped, 'level_dbfs': level_db}
        return feature.astype(np.float32), _clip01(trust), quality


class ImuFeatures:
    """Windowed IMU statistics: mean and std of accel and gyro axes, and magnitudes.

    Trust falls when readings sit at a saturation limit, when variance jumps far
    above its running level, and when the gyro's rest bias drifts. The window is
    a ring buffer, so one sample costs a few small array operations (a 1 kHz IMU
    must not back up its node).
    """

    DIM = 14

    def __init__(self, window: int = 10, accel_range: float = 2 * 9.80665,
                 gyro_range: float = 4.36):
        self.window = int(window)
        self._ring = np.zeros((self.window, 6), np.float32)
        self._count = 0
        self._recent = []                # the two samples before the newest, oldest first
        self.limits = np.array([accel_range] * 3 + [gyro_range] * 3, np.float32) * 0.98
        self.accel_range, self.gyro_range = accel_range, gyro_range
        self._var_ref = None

    def encode(self, accel, gyro, now_s: float = 0.0):
        """Return (feature, trust, quality) after adding one sample."""
        x = np.empty(6, np.float32)
        try:
            x[:3], x[3:] = accel, gyro
        except (ValueError, TypeError) as exc:
            raise ValueError(f'expected 3-vectors for accel and gyro ({exc})') from exc
        if not np.isfinite(x).all():
            raise ValueError('expected finite 3-vectors for accel and gyro')
        self._ring[self._count % self.window] = x
        self._count += 1
        n = min(self._count, self.window)
        win = self._ring[:n]             # order does not matter for mean and std
        mean, std = win.mean(axis=0), win.std(axis=0)
        feature = np.empty(self.DIM, np.float32)
        feature[0:3], feature[3:6] = mean[:3] / 9.81, mean[3:]
        feature[6:9], feature[9:12] = std[:3] / 9.81, std[3:]
        feature[12] = math.sqrt(float(mean[:3] @ mean[:3])) / 9.81
        feature[13] = math.sqrt(float(mean[3:] @ mean[3:]))
        # saturation: a reading at a range limit, or pinned (unchanged for 3 samples)
        ax = np.abs(x)
        hit = ax >= self.limits
        if len(self._recent) == 2:
            tol = 1e-6 + 1e-5 * ax
            pinned = (np.abs(self._recent[0] - x) <= tol) & (np.abs(self._recent[1] - x) <= tol)
            hit |= pinned & (ax > 0.05)
            self._recent.pop(0)
        self._recent.append(x)
        saturated = float(hit.any())
        var = float(std.sum())
        anomaly = 0.0
        if n == self.window:             # judge variance only on full windows
            if self._var_ref is None:
                self._var_ref = var
            anomaly = _clip01((var / (self._var_ref + 0.05) - 5.0) / 10.0)
            self._var_ref = 0.98 * self._var_ref + 0.02 * var
        trust = (1 - 0.8 * saturated) * (1 - anomaly)
        quality = {'saturated': saturated, 'variance_anomaly': anomaly}
        return feature, _clip01(trust), quality
