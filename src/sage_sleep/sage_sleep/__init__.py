"""SAGE sleep: the lifecycle consolidation node, augmentation, training and checkpoints."""
