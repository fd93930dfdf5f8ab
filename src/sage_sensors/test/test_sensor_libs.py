"""The ROS-free sensor libraries on real data: capture, encoder, speech, IMU drivers."""

import os
import pty

import cv2
import numpy as np
import pytest
from sage_testing import realdata
from sage_sensors.audio import (AudioInput, AudioInputError, Recognizer, SileroVad,
                                list_input_devices)
from sage_sensors.camera import CaptureError, FrameSource, load_camera_info
from sage_sensors.encoder import EncoderFile, FrameEncoder
from sage_sensors.imu import (BiasDrift, ImuDeviceError, Mpu6050, Orientation, SerialImu,
                              SimulatedMpu6050)


def video_frames(n, step=1):
    """Frames of vtest.avi through OpenCV's real capture path."""
    src = FrameSource(realdata.video_path(), fps=0, loop=False)
    src.fps = 0   # no pacing in tests
    frames = []
    for i in range(n * step):
        f = src.read()
        if f is None:
            break
        if i % step == 0:
            frames.append(f)
    src.close()
    return frames


def test_frame_source_reads_video_folder_and_explains_missing_devices(tmp_path):
    frames = video_frames(30)
    assert len(frames) == 30 and frames[0].shape == (576, 768, 3)
    assert np.abs(frames[0].astype(int) - frames[29]).mean() > 1   # people walk
    for name, img in realdata.images(('astronaut', 'coffee')).items():
        cv2.imwrite(str(tmp_path / f'{name}.png'), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    folder = FrameSource(str(tmp_path), fps=1000, loop=False)
    got = [folder.read(), folder.read(), folder.read()]
    assert np.array_equal(got[0], realdata.images(('astronaut',))['astronaut'])
    assert got[2] is None
    with pytest.raises(CaptureError, match='video devices'):
        FrameSource('/dev/video97')
    with pytest.raises(CaptureError, match='not a device, pipeline'):
        FrameSource(str(tmp_path / 'nothing.avi'))


def test_camera_info_yaml(tmp_path):
    path = tmp_path / 'cam.yaml'
    path.write_text("""image_width: 768
image_height: 576
camera_name: vtest
camera_matrix: {rows: 3, cols: 3, data: [500, 0, 384, 0, 500, 288, 0, 0, 1]}
distortion_model: plumb_bob
distortion_coefficients: {rows: 1, cols: 5, data: [0.1, -0.2, 0, 0, 0]}
rectification_matrix: {rows: 3, cols: 3, data: [1, 0, 0, 0, 1, 0, 0, 0, 1]}
projection_matrix: {rows: 3, cols: 4, data: [500, 0, 384, 0, 0, 500, 288, 0, 0, 0, 1, 0]}
""")
    info = load_camera_info(str(path))
    assert info['width'] == 768 and info['k'][2] == 384 and len(info['p']) == 12
    path.write_text(path.read_text().replace('data: [500, 0, 384, 0, 500, 288, 0, 0, 1]',
                                             'data: [500, 0, 384]'))
    with pytest.raises(ValueError, match='camera_matrix has 3 values, expected 9'):
        load_camera_info(str(path))


def test_encoder_trains_on_video_flags_unfamiliar_frames_and_hot_reloads(tmp_path):
    frames = video_frames(120, step=4)
    enc = FrameEncoder(latent=16)
    stats = enc.fit(frames[::2], epochs=12, time_limit_s=30)
    assert stats['val_error'] < 0.05
    held_out = [enc.error_ratio(enc.encode(f)[1]) for f in frames[1::2][:20]]
    black = enc.error_ratio(enc.encode(np.zeros_like(frames[0]))[1])
    photo = enc.error_ratio(enc.encode(realdata.images(('astronaut',))['astronaut'])[1])
    assert np.median(held_out) < 2.0 and black > 4.0 and photo > 2.0
    path = str(tmp_path / 'enc.pt')
    enc.save(path)
    watched = EncoderFile(path)
    z_saved, _ = watched.encoder.encode(frames[3])
    assert np.allclose(z_saved, enc.encode(frames[3])[0], atol=1e-6)
    with open(path, 'wb') as f:            # a broken update keeps the working model
        f.write(b'not a model')
    assert not watched.poll() and 'not a frame encoder' in watched.error
    assert watched.encoder is not None
    FrameEncoder(latent=16, seed=1).save(path)
    os.utime(path, ns=(1, 10**18))
    assert watched.poll() and watched.error == ''


def test_speech_is_recognised_and_voice_activity_found():
    pcm, rate = realdata.read_wav(realdata.speech_wav())
    x = np.concatenate([pcm[:, 0], np.zeros(rate, np.int16)])
    vad, rec = SileroVad(), Recognizer()
    probs, utterances = [], []
    for i in range(0, len(x), 320):
        chunk = x[i:i + 320]
        probs.append(vad(chunk.astype(np.float32) / 32768, rate))
        u = rec.feed(chunk, rate, probs[-1] > 0.5)
        if u is not None:
            utterances.append(u)
    assert len(utterances) == 1
    assert rec.transcribe(utterances[0]) == realdata.SPEECH_TEXT
    probs = np.array(probs)
    assert probs[:10].max() < 0.2 and probs.max() > 0.9     # silence first, then speech


def test_audio_input_reads_files_and_lists_devices_when_missing():
    src = AudioInput(realdata.speech_wav(), block=320, loop=False, realtime=False)
    n = 0
    while (b := src.read()) is not None:
        assert b.shape[1] == 1 and b.dtype == np.int16
        n += len(b)
    assert n == 44580 and src.rate == 16000
    with pytest.raises(AudioInputError, match='input devices'):
        AudioInput('no such microphone')
    assert 'input devices' in list_input_devices()


def test_mpu6050_driver_reads_real_motion_through_the_register_map():
    rec = realdata.imu_recordings()['walking_xsens_lowerLeg']
    sim = SimulatedMpu6050()
    with pytest.raises(ImuDeviceError, match='no device answers at I2C address 0x69'):
        Mpu6050(sim, 0x69)
    mpu = Mpu6050(sim, 0x68, accel_range_g=16, gyro_range_dps=2000)
    assert mpu.chip == 'MPU-6050' and sim.regs[0x1C] == 3 << 3 and sim.regs[0x1B] == 3 << 3
    got = []
    for a, g in zip(rec.accel[:500], rec.gyro[:500]):
        sim.set_sample(a, g)
        got.append(np.concatenate(mpu.read()[:2]))
    got = np.array(got)
    truth = np.hstack([rec.accel[:500], rec.gyro[:500]])
    assert np.abs(got[:, :3] - truth[:, :3]).max() <= mpu.accel_scale
    assert np.abs(got[:, 3:] - truth[:, 3:]).max() <= mpu.gyro_scale
    # at ±2 g the walking shank's accelerations saturate, as on the real chip
    small = Mpu6050(sim, 0x68, accel_range_g=2)
    peak = rec.accel[np.abs(rec.accel).max(axis=1).argmax()]
    sim.set_sample(peak, [0, 0, 0])
    assert np.abs(small.read()[0]).max() == pytest.approx(2 * 9.80665, abs=0.01)


def rest_segment():
    """A real IMU lying still: NGIMU samples 200-450 (gyro std about 0.002 rad/s)."""
    rec = realdata.imu_recordings()['ngimu']
    return rec.accel[200:450], rec.gyro[200:450]


def test_mpu6050_calibration_removes_gyro_bias_and_refuses_motion():
    accel, gyro = rest_segment()
    bias = np.array([0.02, -0.015, 0.01])
    sim = SimulatedMpu6050(who_am_i=0x71, samples=zip(accel, gyro + bias))
    mpu = Mpu6050(sim, 0x68)
    assert mpu.chip == 'MPU-9250'
    est = mpu.calibrate(200, 0.0)
    assert np.allclose(est, gyro[:200].mean(axis=0) + bias, atol=mpu.gyro_scale)
    # the chip's own rest bias (the recording's) is removed along with the added one
    assert np.abs(mpu.read()[1] - (gyro[200] - gyro[:200].mean(axis=0))).max() \
        < 2 * mpu.gyro_scale
    walk = realdata.imu_recordings()['walking_xsens_lowerLeg']
    moving = Mpu6050(SimulatedMpu6050(samples=zip(walk.accel[1000:], walk.gyro[1000:])),
                     0x68, gyro_range_dps=2000)
    with pytest.raises(ImuDeviceError, match='at rest'):
        moving.calibrate(100, 0.0)
    sim.regs[0x75] = 0x12
    with pytest.raises(ImuDeviceError, match='WHO_AM_I 0x12'):
        Mpu6050(sim, 0x68)


def test_serial_imu_over_a_pty():
    rec = realdata.imu_recordings()['ngimu']
    master, slave = pty.openpty()
    imu = SerialImu(os.ttyname(slave), 115200, timeout=1.0)
    lines = [' '.join(f'{v:.6f}' for v in np.concatenate([a, g]))
             for a, g in zip(rec.accel[:5], rec.gyro[:5])]
    os.write(master, ('garbage line\n' + '\n'.join(lines) + '\n').encode())
    a, g, _ = imu.read()
    assert np.allclose(a, rec.accel[0], atol=1e-5) and imu.bad_lines == 1
    imu.close()
    os.close(master)
    os.close(slave)
    with pytest.raises(ImuDeviceError, match='serial ports'):
        SerialImu('/dev/ttyUSB97')


def test_madgwick_tilt_matches_the_xsens_onboard_orientation():
    path = os.path.join(realdata._skk_data(), 'data_xsens.txt')
    rows = np.loadtxt(path, skiprows=5)
    acc, gyr, q_ref = rows[:, 1:4], rows[:, 4:7], rows[:, 10:14]

    def up(q):    # the world's z axis in the sensor frame
        w, x, y, z = q
        return np.array([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)])
    filt = Orientation()
    err = [np.degrees(np.arccos(np.clip(up(filt.update(a, g, i / 50.0)) @ up(q), -1, 1)))
           for i, (a, g, q) in enumerate(zip(acc, gyr, q_ref))]
    raw = [np.degrees(np.arccos(np.clip(a / np.linalg.norm(a) @ up(q), -1, 1)))
           for a, q in zip(acc, q_ref)]
    assert np.median(err) < 3.0 and np.median(err) < np.median(raw) / 2


def test_bias_drift_lowers_trust_on_a_real_rest_recording():
    accel, gyro = rest_segment()
    monitor = BiasDrift(window=50, max_drift=0.05)
    for a, g in zip(accel, gyro):
        trust = monitor.update(a, g)
    assert trust > 0.95 and monitor.reference is not None
    for a, g in zip(accel, gyro + [0.04, 0.0, 0.0]):    # the bias walks off by 0.04 rad/s
        trust = monitor.update(a, g)
    assert trust < 0.3 and monitor.drift == pytest.approx(0.04, abs=0.005)
    walk = realdata.imu_recordings()['walking_xsens_lowerLeg']
    fresh = BiasDrift(window=50)
    for a, g in zip(walk.accel[1000:2000], walk.gyro[1000:2000]):
        fresh.update(a, g)
    assert fresh.reference is None     # walking is never mistaken for rest


def test_the_detector_finds_the_worlds_objects_where_they_are():
    from sage_sensors.detect import Detector
    from sage_sim.evaluate import DETECTION, Suite, evaluate_detector
    detector = Detector()
    r = evaluate_detector(detector.detect, Suite('detection', DETECTION.seeds[:10]), steps=20)
    assert r['visible'] > 200
    assert r['precision'] > 0.97 and r['recall'] > 0.95, r
    assert r['range_err_m'] < 0.3 and r['bearing_err_deg'] < 5.0, r
    # nothing to find in a grey frame; bad input says what was wrong
    assert detector.detect(np.full((120, 160, 3), 128, np.uint8), 80, 80, 80, 60) == []
    with pytest.raises(ValueError, match='RGB'):
        detector.detect(np.zeros((120, 160), np.uint8), 80, 80, 80, 60)
    with pytest.raises(ValueError, match='focal'):
        detector.detect(np.zeros((120, 160, 3), np.uint8), float('nan'), 80, 80, 60)


def test_audio_chunks_are_decoded_or_refused_with_the_reason():
    from sage_sensors.sensing import decode_audio
    stereo = np.array([[100, 300], [-50, 50]], '<i2').tobytes()
    assert decode_audio('S16LE', 2, 16000, stereo).tolist() == [200, 0]
    for args, why in [(('U8', 1, 16000, b'\0\0'), 'unsupported'),
                      (('S16LE', 1, 16000, b'\0\0\0'), 'whole number'),
                      (('S16LE', 1, 1000, b'\0\0' * 6000), 'longer than 5 s')]:
        with pytest.raises(ValueError, match=why):
            decode_audio(*args)
