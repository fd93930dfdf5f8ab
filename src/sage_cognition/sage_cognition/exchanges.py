"""The record of cognition exchanges that sleep trains a LoRA adapter on. ROS-free.

Each finished thought is one JSON line of ``exchanges.jsonl``::

    {"t": unix time, "name": node name, "backend": "local", "messages": [chat
     messages the model saw], "answer": "...", "trust": 0.93, "latency_s": 1.2,
     "tokens": 14, "reward_before": mean reward that set its trust or null,
     "reward_after": mean reward in its reward window or null, "rewards_after": n}

``ExchangeLog`` holds a thought until its reward window has passed (so the
line carries the reward that followed it), then appends it: append, flush
and fsync per line, after repairing a torn last line that a crash left. A
thought still pending when the process is killed is lost; ``flush(force=True)``
at shutdown writes what is pending. ``read_exchanges`` skips lines it cannot
parse instead of failing on them.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time


def append_jsonl(path: str, records: list[dict]) -> None:
    """Append ``records`` as JSON lines; each line is flushed and fsynced. Raises OSError."""
    if not records:
        return
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, 'a+b') as f:
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b'\n':           # a torn line from a crash: end it first
                f.write(b'\n')
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False, default=float).encode() + b'\n')
            f.flush()
            os.fsync(f.fileno())


def read_exchanges(path: str, max_lines: int = 50_000) -> tuple[list[dict], int]:
    """Return (the last ``max_lines`` valid records, number of lines skipped as invalid)."""
    if not path or not os.path.isfile(path):
        return [], 0
    with open(path, encoding='utf-8', errors='replace') as f:
        lines = collections.deque(f, maxlen=max_lines)
    records, bad = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if not isinstance(record, dict) or not isinstance(record.get('messages'), list) \
                or not isinstance(record.get('answer'), str):
            bad += 1
            continue
        records.append(record)
    return records, bad


class ExchangeLog:
    """Pending thoughts waiting for their reward window, then appended; see the module doc.

    ``add`` and ``reward`` are cheap and never touch the disk (the executor may
    call ``reward``); ``flush`` writes and may block, so only a worker thread
    should call it.
    """

    def __init__(self, path: str, window_s: float = 0.0):
        self.path, self.window_s = path, float(window_s)
        self._pending: list[tuple[float, dict]] = []     # (monotonic time of the thought, record)
        self._rewards: collections.deque = collections.deque(maxlen=2000)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.written = self.errors = 0

    def add(self, record: dict, now: float | None = None) -> None:
        """Queue one finished thought (its 'reward_after' is filled at flush)."""
        with self._lock:
            self._pending.append((time.monotonic() if now is None else now, dict(record)))

    def reward(self, value: float, now: float | None = None) -> None:
        """Note a reward; it counts for the thoughts whose window it falls in."""
        with self._lock:
            self._rewards.append((time.monotonic() if now is None else now, float(value)))

    def pending(self) -> int:
        """Return how many thoughts wait for their reward window."""
        with self._lock:
            return len(self._pending)

    def flush(self, now: float | None = None, force: bool = False) -> int:
        """Append the thoughts whose window has passed (all with ``force``); return how many.

        On a write error the due records are dropped (counted in ``errors``) and
        the OSError is raised for the caller to report.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            due = [(t0, r) for t0, r in self._pending if force or now - t0 >= self.window_s]
            if not due:
                return 0
            self._pending = [(t0, r) for t0, r in self._pending
                             if not (force or now - t0 >= self.window_s)]
            rewards = list(self._rewards)
        for t0, record in due:
            seen = [v for t, v in rewards if t0 <= t <= t0 + self.window_s]
            record['reward_after'] = sum(seen) / len(seen) if seen else None
            record['rewards_after'] = len(seen)
        with self._write_lock:
            try:
                append_jsonl(self.path, [r for _, r in due])
            except OSError:
                self.errors += len(due)
                raise
            self.written += len(due)
        return len(due)
