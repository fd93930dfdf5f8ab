"""Audio input and understanding without ROS: log-mel energies, voice activity, speech.

- ``LogMel``: log mel-band energies of a chunk (the extended audio feature).
- ``SileroVad``: voice probability from the Silero VAD ONNX model that the PyPI
  ``silero-vad`` package ships, run by onnxruntime (no torch needed).
- ``Recognizer``: offline speech recognition with pocketsphinx's English model,
  cut into utterances by the voice activity.
- ``NoiseFloor``, ``snr_trust``: trust from the noise floor (how much room speech has).
- ``AudioInput``: a sounddevice input stream, or a WAV/raw file played in real time.
"""

from __future__ import annotations

import os
import queue
import time
import wave

import numpy as np


def mel_filterbank(rate: int, n_fft: int, bands: int, fmin: float = 60.0,
                   fmax: float | None = None) -> np.ndarray:
    """Triangular mel filters, shape [bands, n_fft // 2 + 1] (HTK mel scale)."""
    fmax = min(fmax or rate / 2, rate / 2)

    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)
    edges = 700.0 * (10 ** (np.linspace(mel(fmin), mel(fmax), bands + 2) / 2595.0) - 1)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    fb = np.zeros((bands, len(freqs)), np.float32)
    for i in range(bands):
        lo, mid, hi = edges[i:i + 3]
        fb[i] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    return fb


class LogMel:
    """Log mel-band energies of one chunk, scaled to about [0, 1]."""

    def __init__(self, rate: int, bands: int = 40, n_fft: int = 512):
        self.rate, self.bands, self.n_fft = rate, bands, n_fft
        self.fb = mel_filterbank(rate, n_fft, bands)
        self.window = np.hanning(n_fft).astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``x``: float samples in [-1, 1]; frames of n_fft, hop n_fft/2, averaged."""
        n = self.n_fft
        if len(x) < n:
            x = np.pad(x, (0, n - len(x)))
        hop = n // 2
        starts = range(0, len(x) - n + 1, hop)
        frames = np.stack([x[s:s + n] for s in starts]) * self.window
        power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(axis=0)
        return (np.log10(self.fb @ power + 1e-10) / 10 + 1).astype(np.float32)


def silero_model_path() -> str:
    """Path of the Silero VAD ONNX model inside the silero-vad package."""
    import importlib.util
    spec = importlib.util.find_spec('silero_vad')
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError('the silero-vad package is not installed '
                           '(requirements/nodeps.txt: pip install --no-deps silero-vad)')
    path = os.path.join(list(spec.submodule_search_locations)[0], 'data', 'silero_vad.onnx')
    if not os.path.exists(path):
        raise RuntimeError(f'silero-vad has no ONNX model at {path}')
    return path


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Linear-interpolation resampling (enough for VAD and ASR front ends)."""
    if rate == target:
        return x
    n = int(round(len(x) * target / rate))
    return np.interp(np.arange(n) * rate / target, np.arange(len(x)), x).astype(x.dtype)


class SileroVad:
    """Streaming voice probability at 16 kHz, 512-sample (32 ms) windows."""

    RATE, WINDOW, CONTEXT = 16000, 512, 64

    def __init__(self, threads: int = 1):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = threads
        self.session = ort.InferenceSession(silero_model_path(), opts,
                                            providers=['CPUExecutionProvider'])
        self.reset()

    def reset(self) -> None:
        """Forget the recurrent state and buffered samples."""
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros((1, self.CONTEXT), np.float32)
        self._pending = np.zeros(0, np.float32)
        self.prob = 0.0

    def __call__(self, x: np.ndarray, rate: int) -> float:
        """Feed float samples in [-1, 1]; return the latest window's voice probability."""
        self._pending = np.concatenate([self._pending, resample(x.astype(np.float32), rate,
                                                                self.RATE)])
        while len(self._pending) >= self.WINDOW:
            win = self._pending[None, :self.WINDOW]
            self._pending = self._pending[self.WINDOW:]
            inp = np.concatenate([self._context, win], axis=1)
            out, self._state = self.session.run(None, {
                'input': inp, 'state': self._state, 'sr': np.array(self.RATE, np.int64)})
            self._context = inp[:, -self.CONTEXT:]
            self.prob = float(out[0, 0])
        return self.prob


class Recognizer:
    """pocketsphinx (English) on utterances cut by voice activity.

    ``feed(int16 samples, rate, voiced)`` collects an utterance and returns its
    16 kHz samples when it ends (``hangover_s`` of silence after speech);
    ``transcribe`` decodes it in one pass (whole-utterance normalisation is more
    accurate than live decoding; callers run it off their real-time thread).
    """

    def __init__(self, hangover_s: float = 0.6, preroll_s: float = 0.3,
                 max_utterance_s: float = 15.0):
        from pocketsphinx import Decoder
        self.decoder = Decoder(samprate=16000, loglevel='FATAL')
        self.hangover_s, self.preroll_s, self.max_s = hangover_s, preroll_s, max_utterance_s
        self._pre: list = []
        self._utt: list | None = None
        self._silence = 0.0

    def feed(self, samples: np.ndarray, rate: int, voiced: bool) -> np.ndarray | None:
        """Add a chunk; return a finished utterance (int16, 16 kHz), or None."""
        pcm = resample(samples.astype(np.float32), rate, 16000).astype(np.int16)
        if self._utt is None:
            self._pre.append(pcm)      # keep the onset the VAD needed time to notice
            while sum(len(p) for p in self._pre) > self.preroll_s * 16000 + len(pcm):
                self._pre.pop(0)
            if voiced:
                self._utt, self._pre, self._silence = self._pre, [], 0.0
            return None
        self._utt.append(pcm)
        self._silence = 0.0 if voiced else self._silence + len(pcm) / 16000.0
        if self._silence >= self.hangover_s or \
                sum(len(p) for p in self._utt) >= self.max_s * 16000:
            return self.finish()
        return None

    def finish(self) -> np.ndarray | None:
        """End the current utterance (if any) and return its samples."""
        utt, self._utt = self._utt, None
        return np.concatenate(utt) if utt else None

    def transcribe(self, pcm: np.ndarray) -> str:
        """Decode one utterance of 16 kHz int16 samples; return the words."""
        self.decoder.start_utt()
        self.decoder.process_raw(pcm.astype('<i2').tobytes(), False, True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr.strip() if hyp is not None else ''


class NoiseFloor:
    """Noise floor by minimum statistics: the quietest chunk level of the last ``window_s``.

    Speech has pauses, so the minimum over a few seconds is the background; a
    loud noise lifts every chunk and so the floor, within one window.
    """

    def __init__(self, window_s: float = 3.0):
        from collections import deque
        self.window_s = window_s
        self._levels: deque = deque()
        self._span = 0.0

    def update(self, x: np.ndarray, rate: int) -> float | None:
        """Add a chunk (float samples); return the floor in dBFS (None for digital silence)."""
        if not np.any(x):
            return self.floor
        dur = len(x) / rate
        self._levels.append((10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-12), dur))
        self._span += dur
        while self._span - self._levels[0][1] >= self.window_s:
            self._span -= self._levels.popleft()[1]
        return self.floor

    @property
    def floor(self) -> float | None:
        """Current floor in dBFS, or None before any sound."""
        return float(min(level for level, _ in self._levels)) if self._levels else None


def snr_trust(noise_floor_dbfs: float | None, speech_dbfs: float = -10.0,
              min_snr_db: float = 15.0) -> float:
    """Trust from the room the noise floor leaves for speech: 1 at ≥ min_snr_db, 0 at 0 dB."""
    if noise_floor_dbfs is None:
        return 1.0
    return float(np.clip((speech_dbfs - noise_floor_dbfs) / min_snr_db, 0.0, 1.0))


def read_wav(path: str):
    """Return (int16 samples [N, channels], rate) of a 16-bit PCM WAV."""
    with wave.open(path, 'rb') as w:
        if w.getsampwidth() != 2:
            raise ValueError(f'{path}: only 16-bit PCM WAV is supported, '
                             f'got {8 * w.getsampwidth()}-bit')
        data = np.frombuffer(w.readframes(w.getnframes()), '<i2')
        return data.reshape(-1, w.getnchannels()), w.getframerate()


class AudioInputError(RuntimeError):
    """An audio input could not be opened or failed."""


def list_input_devices() -> str:
    """Describe the audio input devices PortAudio sees (for error messages)."""
    try:
        import sounddevice as sd
        devices = [f'{i}: {d["name"]} ({d["max_input_channels"]} in)'
                   for i, d in enumerate(sd.query_devices()) if d['max_input_channels'] > 0]
    except Exception as exc:  # PortAudio missing or failing: say so
        return f'cannot list audio devices ({exc})'
    return 'input devices: ' + ('; '.join(devices) if devices else 'none')


class AudioInput:
    """Int16 chunks [block, channels] from a sounddevice stream or a file in real time.

    ``spec``: '' or 'default' (the default input), a device index or name
    (sounddevice), or a path to a ``.wav`` or ``.raw`` (S16LE) file.
    """

    def __init__(self, spec: str, rate: int = 16000, channels: int = 1, block: int = 320,
                 loop: bool = True, realtime: bool = True):
        self.spec, self.rate, self.channels, self.block = spec.strip(), rate, channels, block
        self.realtime = realtime     # files: pace blocks at the sample rate
        self.loop, self._stream, self._data, self._pos = loop, None, None, 0
        self._next_t = time.monotonic()
        if self.spec.lower().endswith(('.wav', '.raw')):
            self._open_file()
        else:
            self._open_stream()

    def _open_file(self) -> None:
        if not os.path.exists(self.spec):
            raise AudioInputError(f'audio file {self.spec} does not exist')
        if self.spec.lower().endswith('.wav'):
            try:
                self._data, self.rate = read_wav(self.spec)
            except Exception as exc:
                raise AudioInputError(f'cannot read {self.spec}: {exc}') from exc
        else:
            raw = np.fromfile(self.spec, '<i2')
            self._data = raw[:len(raw) // self.channels * self.channels].reshape(
                -1, self.channels)
        self.channels = self._data.shape[1]

    def _open_stream(self) -> None:
        try:
            import sounddevice as sd
        except (ImportError, OSError) as exc:
            raise AudioInputError(f'sounddevice/PortAudio is unavailable ({exc})') from exc
        device = None if self.spec in ('', 'default') else (
            int(self.spec) if self.spec.isdigit() else self.spec)
        self._queue = queue.Queue(maxsize=100)

        def callback(indata, frames, t, status):
            try:
                self._queue.put_nowait(indata.copy())
            except queue.Full:      # the consumer is behind: drop the oldest, keep live
                self._queue.get_nowait()
                self._queue.put_nowait(indata.copy())
        try:
            self._stream = sd.InputStream(device=device, samplerate=self.rate,
                                          channels=self.channels, dtype='int16',
                                          blocksize=self.block, callback=callback)
            self._stream.start()
        except Exception as exc:   # PortAudioError, ValueError: no such device
            raise AudioInputError(f'cannot open audio input {self.spec or "default"!r} at '
                                  f'{self.rate} Hz x{self.channels}: {exc}; '
                                  f'{list_input_devices()}') from exc

    def read(self, timeout: float = 1.0) -> np.ndarray | None:
        """Return the next int16 block [block, channels]; None at the end of a file."""
        if self._stream is not None:
            try:
                return self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AudioInputError(f'audio input {self.spec or "default"!r} delivered '
                                      f'nothing for {timeout} s') from None
        if self._pos >= len(self._data):
            if not self.loop:
                return None
            self._pos = 0
        if self.realtime:
            delay = self._next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._next_t = max(self._next_t, time.monotonic() - 1.0) + self.block / self.rate
        out = self._data[self._pos:self._pos + self.block]
        self._pos += self.block
        return out

    def close(self) -> None:
        """Stop the stream."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
