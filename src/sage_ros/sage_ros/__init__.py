"""SAGE ROS helpers, imported by nodes only."""
