"""The coherence model and what the coherence node needs around it (ROS-free)."""
