"""SAGE cognition: language models as trust-weighted sensors of possible futures."""
