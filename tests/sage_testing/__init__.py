"""Test support (not installed): real rclpy graphs and real data fetched at test time."""
