"""SAGE interop: rosbag2 record/replay, the GR00T bridge, LeRobot export."""
