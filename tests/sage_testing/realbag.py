"""A rosbag2 (MCAP) of real recordings, for the replay test and the parity check.

The pedestrians of opencv-doc's vtest.avi as the camera (160x120, 10 Hz), pocketsphinx's
"go forward ten meters" as the microphone (100 ms chunks, 16 kHz), an XSens recording of
a walking lower leg (scikit-kinematics) as the IMU, and the sentence as the instruction,
stamped from bag time T0.
"""

from __future__ import annotations

import cv2
import numpy as np
from rclpy.serialization import serialize_message
from sage_interop.bag import Recorder
from sage_msgs.msg import AudioChunk
from sage_ros.image_conv import numpy_to_image
from sensor_msgs.msg import Imu
from std_msgs.msg import String

from sage_testing import realdata

T0, SECONDS, CAMERA_HZ, CHUNK = 1000.0, 4.0, 10.0, 1600      # bag time; 100 ms audio chunks
MODALITIES = ['vision', 'audio', 'imu', 'cognition_main']


def ns(t: float) -> int:
    return int(round(t * 1e9))


def stamped(msg, t: float, frame: str):
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns(t), 1_000_000_000)
    msg.header.frame_id = frame
    return msg


def real_data():
    """Return (frames, audio chunks, IMU recording) from the real recordings."""
    cap = cv2.VideoCapture(realdata.video_path())
    frames = []
    while len(frames) < int(SECONDS * CAMERA_HZ):
        ok, bgr = cap.read()
        assert ok, 'vtest.avi ended early'
        frames.append(cv2.cvtColor(cv2.resize(bgr, (160, 120), interpolation=cv2.INTER_AREA),
                                   cv2.COLOR_BGR2RGB))
    cap.release()
    speech = np.fromfile(realdata.speech_raw_path(), '<i2')           # 16 kHz mono
    speech = np.resize(speech, int(SECONDS * 16000))                   # loop it to fill
    chunks = speech.reshape(-1, CHUNK)
    imu = realdata.imu_recordings()['walking_xsens_lowerLeg']
    return frames, chunks, imu


def build_bag(path, frames, chunks, imu):
    out = []                                   # (time, topic, msgtype, message)
    out.append((T0, '/sage/instruction', 'std_msgs/msg/String',
                String(data=realdata.SPEECH_TEXT)))
    for i, frame in enumerate(frames):
        t = T0 + i / CAMERA_HZ
        out.append((t, '/camera/image_raw', 'sensor_msgs/msg/Image',
                    stamped(numpy_to_image(frame, 'rgb8'), t, 'camera_optical_frame')))
    for i, chunk in enumerate(chunks):
        t = T0 + i * CHUNK / 16000
        out.append((t, '/audio/chunk', 'sage_msgs/msg/AudioChunk', stamped(AudioChunk(
            encoding='S16LE', sample_rate=16000, channels=1, data=chunk.tobytes()), t,
            'microphone_link')))
    for k in range(int(SECONDS * imu.rate_hz)):
        t = T0 + k / imu.rate_hz
        msg = stamped(Imu(), t, 'imu_link')
        msg.orientation_covariance[0] = -1.0                     # REP-145: no orientation
        a, g = imu.accel[k], imu.gyro[k]
        msg.linear_acceleration.x, msg.linear_acceleration.y, msg.linear_acceleration.z = a
        msg.angular_velocity.x, msg.angular_velocity.y, msg.angular_velocity.z = g
        out.append((t, '/imu/data_raw', 'sensor_msgs/msg/Imu', msg))
    rec = Recorder(str(path), 'mcap')
    for t, topic, msgtype, msg in sorted(out, key=lambda m: m[0]):
        rec.add_topic(topic, msgtype)
        rec.write(topic, serialize_message(msg), ns(t))
    rec.close()
    return rec.counts
