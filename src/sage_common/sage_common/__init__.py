"""SAGE common: ROS-free basics every layer shares (checkpoints, paths, features)."""
