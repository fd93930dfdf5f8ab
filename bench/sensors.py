"""Sensor benchmark on real data: camera encode, audio chunk and IMU sample costs.

    python bench/sensors.py   ->  bench/results/sensors.json (summary: camera_encode_ms,
                                  audio_chunk_ms, imu_max_rate_hz)

camera: vtest.avi frames resized to 640x480, image profile + autoencoder latent
(trained briefly on the same video). audio: pocketsphinx's "go forward ten meters"
in 20 ms chunks: band energies, noise floor, Silero VAD and log-mel. IMU: a real
XSens walk, sample by sample: windowed statistics, bias drift and Madgwick; then
the IMU node in its own process (`sage run --only imu`) fed at 1 kHz from this one,
counting what it took in (its diagnostics) and the features it published.
"""

import time

import cv2
import numpy as np
from common import write
from sage_testing import realdata
from sage_sensors.audio import LogMel, NoiseFloor, SileroVad
from sage_sensors.encoder import FrameEncoder
from sage_sensors.features import AudioFeatures, ImuFeatures, VisionFeatures
from sage_sensors.imu import BiasDrift, Orientation


def ms(times):
    return 1e3 * float(np.median(times)), 1e3 * float(np.percentile(times, 99))


def camera(n=200):
    cap = cv2.VideoCapture(realdata.video_path())
    frames = []
    while len(frames) < n:
        ok, bgr = cap.read()
        frames.append(cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (640, 480)))
    enc = FrameEncoder()
    enc.fit(frames[::4], epochs=5, time_limit_s=30)
    vision, times = VisionFeatures(), []
    for f in frames:
        t = time.perf_counter()
        vision.encode(f)
        enc.encode(f)
        times.append(time.perf_counter() - t)
    return ms(times[10:])


def audio():
    pcm = realdata.read_wav(realdata.speech_wav())[0][:, 0]
    feats, floor, vad, mel = AudioFeatures(), NoiseFloor(), SileroVad(), LogMel(16000)
    times = []
    for _ in range(3):
        for i in range(0, len(pcm) - 320, 320):
            chunk = pcm[i:i + 320]
            t = time.perf_counter()
            feats.encode(chunk, 16000)
            x = chunk.astype(np.float32) / 32768
            floor.update(x, 16000)
            vad(x, 16000)
            mel(x)
            times.append(time.perf_counter() - t)
    return ms(times)


def imu_library(rec):
    feats, drift, orient = ImuFeatures(), BiasDrift(), Orientation()
    start = time.perf_counter()
    for i, (a, g) in enumerate(zip(rec.accel, rec.gyro)):
        feats.encode(a, g)
        drift.update(a, g)
        orient.update(a, g, i / rec.rate_hz)
    return len(rec.accel) / (time.perf_counter() - start)


def imu_graph(rec, rate_hz=1000.0, seconds=5.0):
    """Feed the IMU node (its own process, as `sage run` starts it) at ``rate_hz``.

    Returns what it took in (the ``received`` count on its diagnostics) and put out.
    """
    import subprocess

    import rclpy
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray
    from sage_msgs.msg import Feature
    from sensor_msgs.msg import Imu
    msgs = []
    for a, g in zip(rec.accel, rec.gyro):
        m = Imu()
        m.linear_acceleration.x, m.linear_acceleration.y, m.linear_acceleration.z = map(float, a)
        m.angular_velocity.x, m.angular_velocity.y, m.angular_velocity.z = map(float, g)
        msgs.append(m)
    proc = subprocess.Popen(['sage', 'run', '--only', 'imu', '--use-sim-time', 'false'],
                            stdout=subprocess.DEVNULL)
    try:
        rclpy.init()
        node = rclpy.create_node('bench_imu')
        features, received = [], []

        def on_diag(msg):
            for st in msg.status:
                values = {v.key: v.value for v in st.values}
                if st.name.endswith('imu') and 'received' in values:
                    received.append(int(float(values['received'])))
        node.create_subscription(Feature, 'sage/features/imu', features.append, 1000)
        node.create_subscription(DiagnosticArray, 'diagnostics', on_diag, 10)
        pub = node.create_publisher(Imu, 'imu/data_raw', 1000)
        while pub.get_subscription_count() == 0 or not received:
            rclpy.spin_once(node, timeout_sec=0.1)
        start_count = received[-1]
        n, start = int(rate_hz * seconds), time.perf_counter()
        for i in range(n):
            msg = msgs[i % len(msgs)]
            msg.header.stamp = Time(sec=1 + i // 1000, nanosec=(i % 1000) * 1_000_000)
            pub.publish(msg)
            rclpy.spin_once(node, timeout_sec=0)
            delay = start + (i + 1) / rate_hz - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        sent_s = time.perf_counter() - start
        end = time.monotonic() + 2.5            # two more diagnostics reports
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        proc.terminate()
        proc.wait(10)
        if rclpy.ok():
            rclpy.shutdown()
    return dict(sent=n, sent_s=sent_s, taken=received[-1] - start_count,
                features=len(features))


def main():
    cam50, cam99 = camera()
    aud50, aud99 = audio()
    rec = realdata.imu_recordings()['walking_xsens_lowerLeg']
    lib_hz = imu_library(rec)
    g = imu_graph(rec)
    taken_hz = g['taken'] / g['sent_s']
    summary = {'camera_encode_ms': round(cam50, 3), 'audio_chunk_ms': round(aud50, 3),
               'imu_max_rate_hz': round(min(lib_hz, taken_hz), 1)}
    rows = [('metric', 'value', 'goal'),
            ('camera encode per frame 640x480, median ms (p99)',
             f'{cam50:.2f} ({cam99:.2f})', '< 10'),
            ('audio per 20 ms chunk, median ms (p99)', f'{aud50:.3f} ({aud99:.3f})', '< 2'),
            ('IMU library per sample, max rate Hz', f'{lib_hz:.0f}', ''),
            ('IMU node in a graph fed at 1 kHz: samples taken in / sent',
             f'{g["taken"]} / {g["sent"]} ({taken_hz:.0f} Hz)', '1 kHz, no backlog'),
            ('  features published (capped at max_feature_hz = 100)', f'{g["features"]}', '')]
    write('sensors', summary, rows, {
        'camera_p99_ms': cam99, 'audio_p99_ms': aud99, 'imu_library_hz': lib_hz,
        'imu_graph': g, 'imu_graph_taken_hz': taken_hz})


if __name__ == '__main__':
    main()
