"""SAGE coherence: the HRM coherence model, its runtimes and the coherence node."""
