"""Record the SAGE graph to a rosbag2 and play a rosbag2 back into it.

Bags are written and read with the `rosbags` library (no rosbag2 install
needed): MCAP or sqlite3 storage, readable by `ros2 bag` and by rosbags.
Messages travel as serialized CDR both ways (rclpy raw subscriptions and raw
publishing), so any message type works, SAGE's own included: their
definitions are registered from the installed sage_msgs .msg files.
"""

from __future__ import annotations

import glob
import importlib
import os
import time
from pathlib import Path

DEFAULT_TOPICS = ('camera/image_raw', 'camera/camera_info', 'imu/data_raw', 'audio/chunk', 'odom',
                  'sage/instruction', 'sage/reward', 'sage/teacher_action', 'sage/episode',
                  'sage/features/vision', 'sage/features/audio', 'sage/features/imu',
                  'sage/features/cognition_main', 'sage/features/memory', 'sage/salience',
                  'sage/action', 'sage/coherence', 'sage/cmd_vel_raw', 'cmd_vel',
                  'sage/cognition/main/text',
                  'sage/world/robot_pose', 'sage/world/layout', 'diagnostics')
STORAGES = ('mcap', 'sqlite3')
# Latched topics (transient local): recorded even when published before the recorder
# started, and replayed latched, or a transient-local subscriber would not match.
LATCHED_TOPICS = ('sage/instruction', 'sage/world/layout', 'sage/checkpoint')
SENSOR_TOPICS = ('image_raw', 'camera_info', 'data_raw', 'audio/chunk', 'odom')


def qos_name(topic: str) -> str:
    """Return the QoS (a sage_ros.common name) to record and replay ``topic`` with."""
    if topic.endswith(LATCHED_TOPICS):
        return 'LATCHED'
    return 'SENSOR_DATA' if topic.endswith(SENSOR_TOPICS) else 'DEFAULT'


class BagError(RuntimeError):
    """A bag cannot be written or read as asked; the message says why."""


def typestore():
    """Return a rosbags typestore for ROS 2 Kilted plus SAGE's messages."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    store = get_typestore(Stores.ROS2_KILTED)
    try:
        from ament_index_python.packages import get_package_share_directory
        share = get_package_share_directory('sage_msgs')
    except Exception:   # not installed: the source tree
        share = os.path.join(os.path.dirname(__file__), '..', '..', 'sage_msgs')
    types = {}
    for path in sorted(glob.glob(os.path.join(share, 'msg', '*.msg'))):
        name = f'sage_msgs/msg/{Path(path).stem}'
        types.update(get_types_from_msg(Path(path).read_text(), name))
    store.register(types)
    return store


def message_class(msgtype: str):
    """Import the rclpy message class for 'pkg/msg/Type'."""
    pkg, kind, name = msgtype.split('/')
    try:
        return getattr(importlib.import_module(f'{pkg}.{kind}'), name)
    except (ImportError, AttributeError) as exc:
        raise BagError(f'message type {msgtype} is not installed here: {exc}') from exc


def open_writer(path: str, storage: str = 'mcap'):
    """Create a rosbag2 directory at ``path`` (must not exist) and return an open Writer."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    if storage not in STORAGES:
        raise BagError(f'unknown storage {storage!r}; choose one of {STORAGES}')
    if os.path.exists(path):
        raise BagError(f'{path} exists: choose a new bag name (a recording is never overwritten)')
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    writer = Writer(path, version=9, storage_plugin=plugin)
    writer.open()
    return writer


class Recorder:
    """Write serialized messages of named topics into a bag (one writer thread: the caller's)."""

    def __init__(self, path: str, storage: str = 'mcap'):
        self.writer = open_writer(path, storage)
        self.store = typestore()
        self.connections = {}
        self.counts = {}

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Register a topic and its type ('pkg/msg/Type')."""
        if topic not in self.connections:
            self.connections[topic] = self.writer.add_connection(topic, msgtype,
                                                                 typestore=self.store)
            self.counts[topic] = 0

    def write(self, topic: str, data: bytes, stamp_ns: int) -> None:
        """Append one serialized message received at ``stamp_ns``."""
        self.writer.write(self.connections[topic], stamp_ns, data)
        self.counts[topic] += 1

    def close(self) -> None:
        """Finish the bag (writes its metadata); safe to call twice."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def topics(path: str, wanted=None) -> dict[str, str]:
    """Return {topic: msgtype} of a bag (only ``wanted`` topics if given)."""
    from rosbags.rosbag2 import Reader
    if not os.path.isdir(path):
        raise BagError(f'no rosbag2 directory at {path}')
    with Reader(path) as reader:
        return {c.topic: c.msgtype for c in reader.connections
                if not wanted or c.topic in wanted}


def read(path: str, topics=None):
    """Yield (topic, msgtype, timestamp_ns, serialized bytes) in time order."""
    from rosbags.rosbag2 import Reader
    if not os.path.isdir(path):
        raise BagError(f'no rosbag2 directory at {path}')
    with Reader(path) as reader:
        conns = [c for c in reader.connections if not topics or c.topic in topics]
        if not conns:
            raise BagError(f'{path} holds none of the topics {list(topics or [])}; it has '
                           f'{sorted({c.topic for c in reader.connections})}')
        for conn, stamp, data in reader.messages(connections=conns):
            yield conn.topic, conn.msgtype, stamp, bytes(data)


def play(path: str, publish, clock=None, rate: float = 1.0, loop: bool = False,
         topics=None, should_stop=lambda: False, sleep=time.sleep) -> int:
    """Call ``publish(topic, msgtype, data)`` with the bag's timing; return messages sent.

    ``clock(stamp_ns)`` (if given) is called before each message with the bag
    time, to drive /clock for use_sim_time. ``rate`` scales the speed.
    """
    if rate <= 0:
        raise BagError('rate must be > 0')
    sent = 0
    while True:
        start_wall = start_bag = None
        for topic, msgtype, stamp, data in read(path, topics):
            if should_stop():
                return sent
            if start_bag is None:          # the schedule starts at the first message
                start_wall, start_bag = time.monotonic(), stamp
            delay = (stamp - start_bag) / 1e9 / rate - (time.monotonic() - start_wall)
            if delay > 0:
                sleep(delay)
            if clock is not None:
                clock(stamp)
            publish(topic, msgtype, data)
            sent += 1
        if not loop or should_stop():
            return sent
