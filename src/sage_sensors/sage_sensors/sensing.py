"""One sensing step per sensor: raw reading in, feature vector and every trust factor out.

ROS-free. The camera, microphone and IMU nodes call these objects on each message, and
every offline user (training, sleep validation, benchmarks, ``sage train``, the parity
bench) calls the very same ones, so the features and trust the coherence model learns
from are the ones the graph feeds it (``bench/parity.py`` proves it on real recordings).

``CameraSensing.step(rgb, stamp_s, now_s)``      image statistics, the frame encoder's
    latent and familiarity, blur/exposure/clipping/frozen frames, staleness
``MicrophoneSensing.step(mono, rate, stamp_s, now_s)``  band energies, Silero voice
    probability, log-mel (optional), dropouts/clipping/SNR room, staleness
``ImuSensing.step(accel, gyro, stamp_s, now_s)``  window statistics, bias drift,
    saturation/variance anomalies, Madgwick orientation (optional), the feature rate
    cap (None when a sample only updated the window), staleness

Each config dataclass holds the defaults that the node's parameters take.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sage_common.features import Sensed, staleness_factor

from sage_sensors.audio import LogMel, NoiseFloor, snr_trust
from sage_sensors.features import AudioFeatures, ImuFeatures, VisionFeatures


class Sensing:
    """Common end of a sensing step: finite check, staleness, the Sensed record."""

    stale_after_s = 0.5

    def finish(self, vector, trust: float, quality: dict, stamp_s: float,
               now_s: float) -> Sensed:
        """Fold staleness into trust and return the feature; ValueError if non-finite."""
        vector = np.asarray(vector, np.float32)
        if not np.all(np.isfinite(vector)):
            raise ValueError('non-finite feature')
        age = max(0.0, now_s - stamp_s)
        trust *= staleness_factor(age, self.stale_after_s, 2 * self.stale_after_s)
        return Sensed(vector, float(min(1.0, max(0.0, trust))),
                      {**quality, 'staleness_s': age}, stamp_s)


@dataclass
class CameraConfig:
    """Camera sensing options (the camera node's parameters of the same names)."""

    stale_after_s: float = 0.5
    encoder: str = ''           # frame autoencoder file; '' = off
    encoder_latent: int = 32


class CameraSensing(Sensing):
    """RGB frame -> vision feature (+ encoder latent) with trust."""

    def __init__(self, config: CameraConfig | None = None):
        self.config = config or CameraConfig()
        self.stale_after_s = self.config.stale_after_s
        self.profile = VisionFeatures()
        self.encoder_file = None
        if self.config.encoder:
            from sage_sensors.encoder import EncoderFile
            self.encoder_file = EncoderFile(self.config.encoder)

    @property
    def dim(self) -> int:
        """Feature length."""
        return VisionFeatures.DIM + (self.config.encoder_latent if self.encoder_file else 0)

    def poll_encoder(self) -> bool:
        """Reload the encoder file if it changed; True when a new model came in."""
        return self.encoder_file is not None and self.encoder_file.poll()

    def step(self, image: np.ndarray, stamp_s: float, now_s: float) -> Sensed:
        """Sense one H×W×3 uint8 RGB frame; ValueError for a frame that cannot be used."""
        feature, trust, quality = self.profile.encode(image, stamp_s)
        if self.encoder_file is not None:
            latent = np.zeros(self.config.encoder_latent, np.float32)
            enc = self.encoder_file.encoder
            quality['encoder_loaded'] = 0.0      # no usable encoder: zero latent, same length
            if enc is not None and enc.latent == self.config.encoder_latent:
                latent, err = enc.encode(image)
                ratio = enc.error_ratio(err)
                quality.update(encoder_loaded=1.0, recon_error=err, recon_error_ratio=ratio)
                # typical error (up to 2x the held-out median) is trusted; 8x is not
                trust *= float(np.clip(1.0 - (ratio - 2.0) / 6.0, 0.0, 1.0))
            feature = np.concatenate([feature, latent])
        return self.finish(feature, trust, quality, stamp_s, now_s)

    def status(self) -> tuple[str, str] | None:
        """(level, message) when the configured encoder is not usable, else None."""
        if self.encoder_file is None:
            return None
        enc = self.encoder_file.encoder
        if enc is None:
            return 'WARN', f'encoder not loaded ({self.encoder_file.error}); latent is zero'
        if enc.latent != self.config.encoder_latent:
            return 'WARN', (f'encoder latent {enc.latent} != encoder_latent '
                            f'{self.config.encoder_latent}; latent is zero')
        return None


@dataclass
class MicrophoneConfig:
    """Microphone sensing options (the microphone node's parameters of the same names)."""

    stale_after_s: float = 0.5
    min_snr_db: float = 15.0
    vad: bool = True
    extended_features: bool = False
    mel_bands: int = 40


MAX_CHUNK_S = 5.0


def decode_audio(encoding: str, channels: int, rate: int, data: bytes) -> np.ndarray:
    """Interleaved S16LE bytes -> mono int16 samples; ValueError for anything else."""
    if encoding != 'S16LE' or not 1 <= channels <= 64 or not 1000 <= rate <= 384000:
        raise ValueError(f'unsupported audio {encoding!r} x{channels} @{rate} Hz '
                         f'(need S16LE, 1-64 channels, 1-384 kHz)')
    if len(data) % (2 * channels):
        raise ValueError(f'{len(data)} bytes is not a whole number of frames')
    seconds = len(data) / (2 * channels * rate)
    if seconds > MAX_CHUNK_S:       # drivers send tens of ms; this much would stall the node
        raise ValueError(f'a chunk of {seconds:.1f} s is longer than {MAX_CHUNK_S:.0f} s '
                         f'(send audio in short chunks)')
    samples = np.frombuffer(data, '<i2').reshape(-1, channels)
    return samples.mean(axis=1).astype(np.int16) if channels > 1 else samples[:, 0]


class MicrophoneSensing(Sensing):
    """Mono int16 chunk -> audio feature with trust (and the voice probability)."""

    def __init__(self, config: MicrophoneConfig | None = None):
        self.config = config or MicrophoneConfig()
        self.stale_after_s = self.config.stale_after_s
        self.bands = AudioFeatures()
        self.noise = NoiseFloor()
        self.vad = None
        if self.config.vad:
            from sage_sensors.audio import SileroVad
            self.vad = SileroVad()
        self._mel: dict = {}
        self.voice_prob = 0.0

    @property
    def dim(self) -> int:
        """Feature length."""
        extra = self.config.mel_bands + 1 if self.config.extended_features else 0
        return AudioFeatures.DIM + extra

    def step(self, mono: np.ndarray, rate: int, stamp_s: float, now_s: float) -> Sensed:
        """Sense one chunk of mono int16 samples."""
        feature, trust, quality = self.bands.encode(mono, rate, stamp_s)
        x = mono.astype(np.float32) / 32768.0
        noise = self.noise.update(x, rate)
        trust *= snr_trust(noise, min_snr_db=self.config.min_snr_db)
        quality['noise_floor_dbfs'] = noise if noise is not None else -120.0
        quality['snr_db'] = quality['level_dbfs'] - noise if noise is not None else 0.0
        self.voice_prob = 0.0
        if self.vad is not None:
            self.voice_prob = self.vad(x, rate)
            quality['voice_prob'] = self.voice_prob
        if self.config.extended_features:
            mel = self._mel.get(rate)
            if mel is None:
                mel = self._mel[rate] = LogMel(rate, self.config.mel_bands)
            feature = np.concatenate([feature, mel(x), [self.voice_prob]])
        return self.finish(feature, trust, quality, stamp_s, now_s)


@dataclass
class ImuConfig:
    """IMU sensing options (the IMU node's parameters of the same names)."""

    stale_after_s: float = 0.5
    accel_range_g: int = 2
    gyro_range_dps: int = 250
    max_bias_drift: float = 0.05
    orientation: bool = False
    max_feature_hz: float = 100.0


class ImuSensing(Sensing):
    """One IMU sample -> IMU feature with trust, at most ``max_feature_hz`` per second."""

    def __init__(self, config: ImuConfig | None = None):
        from sage_sensors.imu import G, BiasDrift, Orientation
        self.config = c = config or ImuConfig()
        self.stale_after_s = c.stale_after_s
        self.window = ImuFeatures(accel_range=c.accel_range_g * G,
                                  gyro_range=math.radians(c.gyro_range_dps))
        self.bias = BiasDrift(max_drift=c.max_bias_drift)
        self.orientation = Orientation() if c.orientation else None
        self._period = 1.0 / c.max_feature_hz if c.max_feature_hz else 0.0
        self._last_feature_s = -math.inf

    @property
    def dim(self) -> int:
        """Feature length."""
        return ImuFeatures.DIM + (4 if self.orientation is not None else 0)

    def step(self, accel, gyro, stamp_s: float, now_s: float) -> Sensed | None:
        """Add one sample; return a feature, or None when the rate cap holds it back."""
        feature, trust, quality = self.window.encode(accel, gyro, stamp_s)
        trust *= self.bias.update(np.asarray(accel, float), np.asarray(gyro, float))
        quality['bias_drift_rad_s'] = self.bias.drift
        if self.orientation is not None:
            feature = np.concatenate([feature, self.orientation.update(accel, gyro, stamp_s)])
        if 0 <= stamp_s - self._last_feature_s < self._period:
            return None     # the sample entered the window; features go out at the capped rate
        self._last_feature_s = stamp_s
        return self.finish(feature, trust, quality, stamp_s, now_s)
