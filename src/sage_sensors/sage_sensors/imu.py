"""IMU drivers, orientation and extra trust without ROS.

- ``Mpu6050``: register-level driver for InvenSense MPU-6050/6500/9250 over I2C
  (any object with smbus2's ``read_byte_data``/``write_byte_data``/
  ``read_i2c_block_data``), with gyro-bias calibration at start.
- ``SimulatedMpu6050``: that register map in memory, fed with samples in SI
  units (saturates at the configured full scale like the chip), for tests and
  hardware-free runs — as ros2_control tests drivers against mock hardware.
- ``SerialImu``: one sample per text line over a serial port (pyserial).
- ``Orientation``: Madgwick filter from the ``ahrs`` library.
- ``BiasDrift``: trust from the gyro bias seen at rest drifting from its first value.
"""

from __future__ import annotations

import glob
import math
import time

import numpy as np

G = 9.80665
# registers (MPU-6000/MPU-6050 Register Map and Descriptions, rev 4.2)
SMPLRT_DIV, CONFIG, GYRO_CONFIG, ACCEL_CONFIG = 0x19, 0x1A, 0x1B, 0x1C
ACCEL_XOUT_H, PWR_MGMT_1, WHO_AM_I = 0x3B, 0x6B, 0x75
CHIPS = {0x68: 'MPU-6050', 0x70: 'MPU-6500', 0x71: 'MPU-9250', 0x73: 'MPU-9255'}
ACCEL_RANGES_G = (2, 4, 8, 16)          # AFS_SEL 0..3
GYRO_RANGES_DPS = (250, 500, 1000, 2000)  # FS_SEL 0..3


class ImuDeviceError(RuntimeError):
    """An IMU could not be found, configured or read."""


def list_i2c_buses() -> str:
    """Describe the I2C buses this machine has (for error messages)."""
    buses = sorted(glob.glob('/dev/i2c-*'))
    return 'I2C buses: ' + (', '.join(buses) if buses else 'none')


class Mpu6050:
    """Register-level MPU-6050/9250 driver: configure, calibrate gyro bias, read SI samples."""

    def __init__(self, bus, address: int = 0x68, accel_range_g: int = 2,
                 gyro_range_dps: int = 250, dlpf: int = 3, sample_div: int = 0):
        if accel_range_g not in ACCEL_RANGES_G or gyro_range_dps not in GYRO_RANGES_DPS:
            raise ValueError(f'ranges must be accel {ACCEL_RANGES_G} g and gyro '
                             f'{GYRO_RANGES_DPS} °/s')
        self.bus, self.address = bus, address
        self.accel_range_g, self.gyro_range_dps = accel_range_g, gyro_range_dps
        try:
            who = bus.read_byte_data(address, WHO_AM_I)
        except OSError as exc:
            raise ImuDeviceError(f'no device answers at I2C address 0x{address:02x} '
                                 f'({exc})') from exc
        if who not in CHIPS:
            raise ImuDeviceError(f'device at 0x{address:02x} has WHO_AM_I 0x{who:02x}, not '
                                 f'an MPU-6050/6500/9250 ({", ".join(map(hex, CHIPS))})')
        self.chip = CHIPS[who]
        bus.write_byte_data(address, PWR_MGMT_1, 0x80)            # reset
        time.sleep(0.01)
        bus.write_byte_data(address, PWR_MGMT_1, 0x01)            # wake, PLL on gyro X
        bus.write_byte_data(address, CONFIG, dlpf & 0x07)
        bus.write_byte_data(address, SMPLRT_DIV, sample_div & 0xFF)
        bus.write_byte_data(address, GYRO_CONFIG, GYRO_RANGES_DPS.index(gyro_range_dps) << 3)
        bus.write_byte_data(address, ACCEL_CONFIG, ACCEL_RANGES_G.index(accel_range_g) << 3)
        self.accel_scale = accel_range_g * G / 32768.0             # m/s² per LSB
        self.gyro_scale = math.radians(gyro_range_dps) / 32768.0   # rad/s per LSB
        self.gyro_bias = np.zeros(3)

    @property
    def accel_limit(self) -> float:
        """Full-scale acceleration, m/s²."""
        return self.accel_range_g * G

    @property
    def gyro_limit(self) -> float:
        """Full-scale angular rate, rad/s."""
        return math.radians(self.gyro_range_dps)

    def read_raw(self):
        """Return (accel [3], gyro [3], temperature °C) in SI units, bias not removed."""
        block = bytes(self.bus.read_i2c_block_data(self.address, ACCEL_XOUT_H, 14))
        if len(block) != 14:
            raise ImuDeviceError(f'short read: {len(block)} of 14 bytes')
        v = np.frombuffer(block, '>i2').astype(np.float64)
        temp = v[3] / 340.0 + 36.53 if self.chip == 'MPU-6050' else v[3] / 333.87 + 21.0
        return v[0:3] * self.accel_scale, v[4:7] * self.gyro_scale, float(temp)

    def read(self):
        """Return (accel m/s², gyro rad/s with the calibrated bias removed, temperature)."""
        a, g, t = self.read_raw()
        return a, g - self.gyro_bias, t

    def calibrate(self, samples: int = 200, period_s: float = 0.002,
                  max_std: float = 0.02) -> np.ndarray:
        """Average the gyro at rest into ``gyro_bias``; refuse if the IMU was moving."""
        rates = []
        for _ in range(samples):
            rates.append(self.read_raw()[1])
            time.sleep(period_s)
        g = np.array(rates)
        if g.std(axis=0).max() > max_std:
            raise ImuDeviceError(f'gyro calibration needs the IMU at rest: std '
                                 f'{g.std(axis=0).round(4).tolist()} rad/s > {max_std}')
        self.gyro_bias = g.mean(axis=0)
        return self.gyro_bias


class SimulatedMpu6050:
    """An MPU-6050 register map at the smbus level, fed with SI samples.

    ``set_sample(accel, gyro, temp)`` writes the data registers the way the chip
    would at its configured full scale (values beyond it saturate at ±32767);
    with ``samples`` (an iterable of (accel, gyro)), each burst read of the data
    registers first loads the next sample, like a chip sampling a recording.
    """

    def __init__(self, address: int = 0x68, who_am_i: int = 0x68, samples=None):
        self.address = address
        self._feed = iter(samples) if samples is not None else None
        self.regs = bytearray(128)
        self.regs[WHO_AM_I] = who_am_i
        self.regs[PWR_MGMT_1] = 0x40            # the chip wakes up asleep
        self.writes: list = []

    def _check(self, address: int, register: int) -> None:
        if address != self.address:
            raise OSError(121, 'Remote I/O error')     # what smbus2 raises on a NACK
        if not 0 <= register < len(self.regs):
            raise OSError(5, 'Input/output error')

    def read_byte_data(self, address: int, register: int) -> int:
        """smbus2 API: one register."""
        self._check(address, register)
        return self.regs[register]

    def write_byte_data(self, address: int, register: int, value: int) -> None:
        """smbus2 API: write one register (reset bit clears the map, as on the chip)."""
        self._check(address, register)
        self.writes.append((register, value))
        if register == PWR_MGMT_1 and value & 0x80:
            who = self.regs[WHO_AM_I]
            self.regs[:] = bytes(len(self.regs))
            self.regs[WHO_AM_I], self.regs[PWR_MGMT_1] = who, 0x40
            return
        self.regs[register] = value & 0xFF

    def read_i2c_block_data(self, address: int, register: int, length: int) -> list:
        """smbus2 API: consecutive registers."""
        self._check(address, register)
        if self._feed is not None and register == ACCEL_XOUT_H:
            sample = next(self._feed, None)
            if sample is not None:
                self.set_sample(*sample)
        return list(self.regs[register:register + length])

    def set_sample(self, accel, gyro, temp_c: float = 25.0) -> None:
        """Load one sample (m/s², rad/s) into the data registers."""
        if self.regs[PWR_MGMT_1] & 0x40:
            return                               # asleep: registers do not update
        afs = ACCEL_RANGES_G[(self.regs[ACCEL_CONFIG] >> 3) & 3]
        fs = GYRO_RANGES_DPS[(self.regs[GYRO_CONFIG] >> 3) & 3]
        a = np.asarray(accel, float) / (afs * G) * 32768.0
        g = np.degrees(np.asarray(gyro, float)) / fs * 32768.0
        t = (temp_c - 36.53) * 340.0
        v = np.clip(np.round(np.concatenate([a, [t], g])), -32768, 32767).astype('>i2')
        self.regs[ACCEL_XOUT_H:ACCEL_XOUT_H + 14] = v.tobytes()


class SerialImu:
    """Samples from a serial line: ``ax ay az gx gy gz`` (m/s², rad/s), space or comma."""

    def __init__(self, port: str, baud: int = 115200, timeout: float = 1.0):
        try:
            import serial
        except ImportError as exc:
            raise ImuDeviceError('pyserial is not installed') from exc
        try:
            self.port = serial.Serial(port, baud, timeout=timeout)
        except (serial.SerialException, OSError) as exc:
            ports = sorted(glob.glob('/dev/ttyUSB*') + glob.glob('/dev/ttyACM*')
                           + glob.glob('/dev/ttyS[0-3]'))
            raise ImuDeviceError(f'cannot open serial IMU {port} at {baud} baud ({exc}); '
                                 f'serial ports: {", ".join(ports) or "none"}') from exc
        self.bad_lines = 0

    def read(self):
        """Return (accel, gyro, nan) from the next good line; ImuDeviceError on timeout."""
        for _ in range(20):
            line = self.port.readline()
            if not line:
                raise ImuDeviceError(f'serial IMU {self.port.port}: no data')
            try:
                v = np.array(line.decode('ascii').replace(',', ' ').split(), float)
            except (UnicodeDecodeError, ValueError):
                v = np.zeros(0)
            if v.shape == (6,) and np.isfinite(v).all():
                return v[:3], v[3:], float('nan')
            self.bad_lines += 1
        raise ImuDeviceError(f'serial IMU {self.port.port}: 20 unreadable lines in a row')

    def close(self) -> None:
        """Close the port."""
        self.port.close()


class Orientation:
    """Madgwick orientation (ahrs) from accel and gyro; quaternion w, x, y, z.

    The first sample sets roll and pitch from gravity (yaw 0), so the filter
    does not spend its first seconds converging from identity.
    """

    def __init__(self, gain: float = 0.033, nominal_dt: float = 0.01):
        from ahrs.filters import Madgwick
        self.filter = Madgwick(frequency=1.0 / nominal_dt, gain=gain)
        self.nominal_dt = nominal_dt
        self.q = None
        self._last_t = None

    def update(self, accel, gyro, t: float) -> np.ndarray:
        """Advance to time ``t`` (s) with one sample; return the quaternion."""
        acc, gyr = np.asarray(accel, float), np.asarray(gyro, float)
        if self.q is None:
            from ahrs.common.orientation import acc2q
            self.q = np.asarray(acc2q(acc), float) if np.linalg.norm(acc) > 0 else \
                np.array([1.0, 0.0, 0.0, 0.0])
            self._last_t = t
            return self.q
        dt, self._last_t = t - self._last_t, t
        if not 0.0 < dt < 1.0:
            dt = self.nominal_dt    # a stamp jump (replay, no stamps): assume the nominal rate
        q = np.asarray(self.filter.updateIMU(self.q, gyr=gyr, acc=acc, dt=dt), float)
        if np.isfinite(q).all() and np.linalg.norm(q) > 0:
            self.q = q / np.linalg.norm(q)
        return self.q


class BiasDrift:
    """Gyro bias at rest against its first estimate; trust falls as it drifts."""

    def __init__(self, window: int = 50, rest_std: float = 0.01, max_drift: float = 0.05):
        self.window, self.rest_std, self.max_drift = window, rest_std, max_drift
        self._buf: list = []
        self.reference = None
        self.drift = 0.0

    def update(self, accel, gyro) -> float:
        """Add a sample; return the trust factor in [0, 1]."""
        self._buf.append(np.concatenate([accel, gyro]))
        if len(self._buf) >= self.window:
            w = np.array(self._buf)
            self._buf.clear()
            # at rest: steady gyro, gravity only, and a rate no larger than a bias can be
            # (a steady slow turn looks like bias; odometry would be needed to tell)
            at_rest = (w[:, 3:].std(axis=0).max() < self.rest_std
                       and abs(np.linalg.norm(w[:, :3].mean(axis=0)) - G) < 0.5
                       and np.abs(w[:, 3:].mean(axis=0)).max() < 2 * self.max_drift)
            if at_rest:
                bias = w[:, 3:].mean(axis=0)
                if self.reference is None:
                    self.reference = bias
                self.drift = float(np.linalg.norm(bias - self.reference))
        return float(np.clip(1.0 - self.drift / self.max_drift, 0.0, 1.0))
