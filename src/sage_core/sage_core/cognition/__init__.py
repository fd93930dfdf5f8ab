"""Cognition: language models as trust-weighted sensors (ROS-free parts)."""
