"""SAGE sim: the built-in world used as the embedded default and for evaluation."""
