"""Text hygiene: instructions and model outputs are data, never commands."""

import unicodedata


def sanitize(text: str, max_chars: int = 240) -> str:
    """Drop control and unprintable characters, collapse whitespace, cut to ``max_chars``."""
    kept = ''.join(ch if unicodedata.category(ch)[0] != 'C' else ' ' for ch in str(text))
    return ' '.join(kept.split())[:max_chars]
