"""SAGE viz: the RViz markers node and the Foxglove live view."""
