"""SAGE core: HRM model, coherence, cognition and shared node helpers."""
