"""The Hierarchical Reasoning Model: model, ACT inference, puzzle tasks, training, export."""
