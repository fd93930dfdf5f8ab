"""SAGE viz: Foxglove, RViz markers, rosbag record/replay and bridges to other stacks."""
