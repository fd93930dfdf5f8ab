"""The experience store: salient steps in SQLite (WAL), for the sleep node to learn from.

One row per stored time step: time, episode id, the fused features with their
trust and age (float32 blobs; the modality layout is recorded once in the
``meta`` table), the action taken, the teacher's action (-1 if none), the
reward and the salience. Spans of the features that repeat from step to step
(``shared``: sentence embeddings of labels and instructions, 384 numbers each)
are kept once in the ``vectors`` table and referenced: the places feature is
4,752 numbers, of which 144 are not embeddings, so a step takes ~1 KB instead of
~21 KB. Camera frames of salient moments sit beside them
(PNG, at most ``FRAME_WIDTH`` wide) for the vision encoder to train on. Size
caps are kept by deleting the least salient rows first. WAL mode lets one
writer (the memory node) and readers in other processes (sleep, export) work
at once; every insert is its own transaction, so a kill -9 loses at most the
step being written.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    episode INTEGER NOT NULL,
    t REAL NOT NULL,
    features BLOB NOT NULL,
    trust BLOB NOT NULL,
    age BLOB NOT NULL,
    action INTEGER NOT NULL,
    teacher INTEGER NOT NULL,
    reward REAL NOT NULL,
    salience REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS steps_episode ON steps (episode, t);
CREATE INDEX IF NOT EXISTS steps_salience ON steps (salience);
CREATE TABLE IF NOT EXISTS held_out (episode INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS vectors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    digest BLOB NOT NULL UNIQUE,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    episode INTEGER NOT NULL,
    t REAL NOT NULL,
    salience REAL NOT NULL,
    png BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS frames_salience ON frames (salience);
"""


FRAME_WIDTH = 160      # stored frames are shrunk to this width (the encoder uses 64x64)


class StoreError(RuntimeError):
    """The store cannot be used as asked (layout mismatch, bad row); says why."""


class LayoutMismatch(StoreError):
    """The file holds steps of another modality layout."""


def set_aside(path: str) -> str:
    """Rename a store file (and its WAL and shared-memory files) aside; return the new name.

    For a store of another layout: its steps are kept, under a name that says when.
    """
    import time
    kept = f'{path}.{time.strftime("%Y%m%d-%H%M%S")}'
    for suffix in ('-wal', '-shm', ''):     # the database last: a crash leaves it whole
        if os.path.exists(path + suffix):
            os.replace(path + suffix, kept + suffix)
    return kept


@dataclass
class Step:
    """One time step as stored."""

    episode: int
    t: float
    features: np.ndarray
    trust: np.ndarray
    age: np.ndarray
    action: int
    teacher: int
    reward: float
    salience: float


ABSENT_AGE_S = 2.0      # the age the coherence buffer gives a modality it dropped


def relayout(features: np.ndarray, trust: np.ndarray, age: np.ndarray, source: dict,
             target: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return steps ([T, F], [T, M], [T, M]) of layout ``source`` in layout ``target``.

    Layouts map modality names to sizes. A modality of ``target`` that ``source`` lacks
    is absent, as the coherence node sees a dropped one: zeros, trust 0, age
    ABSENT_AGE_S (a store of a memory node whose ``modalities`` left out places).
    """
    features, trust, age = (np.atleast_2d(np.asarray(a, np.float32))
                            for a in (features, trust, age))
    for name, size in target.items():
        if name in source and source[name] != size:
            raise StoreError(f'{name} has {source[name]} values in one layout, {size} in '
                             f'the other')
    starts = dict(zip(source, np.cumsum([0] + list(source.values()))))
    names = list(source)
    blocks, trusts, ages = [], [], []
    for name, size in target.items():
        if name in source:
            blocks.append(features[:, starts[name]:starts[name] + size])
            trusts.append(trust[:, names.index(name)])
            ages.append(age[:, names.index(name)])
        else:
            blocks.append(np.zeros((len(features), size), np.float32))
            trusts.append(np.zeros(len(features), np.float32))
            ages.append(np.full(len(features), ABSENT_AGE_S, np.float32))
    return np.concatenate(blocks, 1), np.stack(trusts, 1), np.stack(ages, 1)


class ExperienceStore:
    """SQLite experience store with a salience-based size cap."""

    def __init__(self, path: str, modalities: dict | None = None, max_rows: int = 200_000,
                 max_frames: int = 5000, shared: list | None = None):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path, self.max_rows, self.max_frames = path, max_rows, max_frames
        self.db = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
        self.db.execute('PRAGMA journal_mode=WAL')
        self.db.execute('PRAGMA synchronous=NORMAL')
        self.db.executescript(SCHEMA)
        row = self.db.execute("SELECT value FROM meta WHERE key='modalities'").fetchone()
        if row is None:
            if modalities is None:
                raise StoreError(f'{path} is empty: give the modality layout to create it')
            with self.db:
                self.db.execute("INSERT INTO meta VALUES ('modalities', ?)",
                                (json.dumps(modalities),))
                self.db.execute("INSERT INTO meta VALUES ('shared', ?)",
                                (json.dumps([list(map(int, x)) for x in shared or []]),))
            self.modalities = dict(modalities)
        else:
            self.modalities = json.loads(row[0])
            if modalities is not None and dict(modalities) != self.modalities:
                self.db.close()
                raise LayoutMismatch(f'{path} holds modalities {self.modalities}, not '
                                     f'{modalities}')
        if 'refs' not in [c[1] for c in self.db.execute('PRAGMA table_info(steps)')]:
            with self.db:       # a store written before shared spans: none of its rows has any
                self.db.execute('ALTER TABLE steps ADD COLUMN refs BLOB')
        row = self.db.execute("SELECT value FROM meta WHERE key='shared'").fetchone()
        self.shared = [tuple(x) for x in json.loads(row[0])] if row else []
        self.feature_size = sum(self.modalities.values())
        self._own = np.ones(self.feature_size, bool)        # positions stored in the row
        for start, size in self.shared:
            if start < 0 or start + size > self.feature_size:
                raise StoreError(f'shared span {start}+{size} lies outside the '
                                 f'{self.feature_size} features')
            self._own[start:start + size] = False
        self._vector_ids: dict[bytes, int] = {}
        self._vectors: dict[int, np.ndarray] = {}
        self._inserts = 0

    def _ref(self, vector: np.ndarray) -> int:
        data = vector.tobytes()
        digest = hashlib.sha1(data).digest()
        vid = self._vector_ids.get(digest)
        if vid is None:
            self.db.execute('INSERT OR IGNORE INTO vectors (digest, data) VALUES (?, ?)',
                            (digest, data))
            vid = self.db.execute('SELECT id FROM vectors WHERE digest=?',
                                  (digest,)).fetchone()[0]
            self._vector_ids[digest] = vid
        return vid

    def _features(self, own: bytes, refs: bytes | None) -> np.ndarray:
        if not refs:
            return np.frombuffer(own, np.float32)
        out = np.empty(self.feature_size, np.float32)
        out[self._own] = np.frombuffer(own, np.float32)
        for (start, size), vid in zip(self.shared, np.frombuffer(refs, np.int64)):
            vector = self._vectors.get(int(vid))
            if vector is None:
                row = self.db.execute('SELECT data FROM vectors WHERE id=?',
                                      (int(vid),)).fetchone()
                if row is None:
                    raise StoreError(f'a step refers to vector {vid}, which the store lacks')
                vector = self._vectors[int(vid)] = np.frombuffer(row[0], np.float32)
            out[start:start + size] = vector
        return out

    def insert(self, step: Step) -> None:
        """Store one step (validated: finite values, right sizes)."""
        f = np.asarray(step.features, np.float32)
        tr, ag = np.asarray(step.trust, np.float32), np.asarray(step.age, np.float32)
        m = len(self.modalities)
        if f.shape != (self.feature_size,) or tr.shape != (m,) or ag.shape != (m,):
            raise StoreError(f'step shapes {f.shape}, {tr.shape}, {ag.shape} do not match '
                             f'the store ({self.feature_size} features, {m} modalities)')
        if not (np.isfinite(f).all() and np.isfinite(tr).all() and np.isfinite(ag).all()
                and np.isfinite(step.reward) and np.isfinite(step.salience)):
            raise StoreError('step contains NaN or Inf')
        with self.db:
            refs = (np.array([self._ref(f[a:a + n]) for a, n in self.shared], np.int64).tobytes()
                    if self.shared else None)
            self.db.execute(
                'INSERT INTO steps (episode, t, features, trust, age, action, teacher, reward, '
                'salience, refs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                (int(step.episode), float(step.t), f[self._own].tobytes(), tr.tobytes(),
                 ag.tobytes(), int(step.action), int(step.teacher), float(step.reward),
                 float(step.salience), refs))
        self._inserts += 1
        if self._inserts % 1000 == 0:
            self.enforce_cap()

    def enforce_cap(self) -> int:
        """Delete the least salient rows above max_rows; return how many went."""
        n = self.count()
        excess = n - self.max_rows
        if excess <= 0:
            return 0
        with self.db:
            self.db.execute('DELETE FROM steps WHERE id IN (SELECT id FROM steps '
                            'ORDER BY salience ASC, id ASC LIMIT ?)', (excess,))
        return excess

    def count(self) -> int:
        """Return the number of stored steps."""
        return int(self.db.execute('SELECT COUNT(*) FROM steps').fetchone()[0])

    # ------------------------------------------------------------------ frames
    def insert_frame(self, episode: int, t: float, image: np.ndarray, salience: float) -> None:
        """Store one RGB uint8 camera frame (shrunk to FRAME_WIDTH, PNG) with its salience."""
        import cv2
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise StoreError(f'a frame must be H×W×3 uint8, got {image.shape} {image.dtype}')
        if not np.isfinite(salience):
            raise StoreError('frame salience is NaN or Inf')
        if image.shape[1] > FRAME_WIDTH:
            h = max(1, round(image.shape[0] * FRAME_WIDTH / image.shape[1]))
            image = cv2.resize(image, (FRAME_WIDTH, h), interpolation=cv2.INTER_AREA)
        ok, png = cv2.imencode('.png', np.ascontiguousarray(image[:, :, ::-1]))
        if not ok:
            raise StoreError('could not encode the frame as PNG')
        with self.db:
            self.db.execute('INSERT INTO frames (episode, t, salience, png) VALUES (?, ?, ?, ?)',
                            (int(episode), float(t), float(salience), png.tobytes()))
            n = self.db.execute('SELECT COUNT(*) FROM frames').fetchone()[0]
            if n > self.max_frames:
                self.db.execute('DELETE FROM frames WHERE id IN (SELECT id FROM frames ORDER BY '
                                'salience ASC, id ASC LIMIT ?)', (n - self.max_frames,))

    def frame_count(self) -> int:
        """Return the number of stored frames."""
        return int(self.db.execute('SELECT COUNT(*) FROM frames').fetchone()[0])

    def sample_frames(self, n: int, rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
        """Up to ``n`` (episode, RGB frame) pairs, without replacement, weighted by salience."""
        import cv2
        rows = self.db.execute('SELECT id, salience FROM frames').fetchall()
        if not rows:
            return []
        ids = np.array([r[0] for r in rows])
        w = np.array([max(r[1], 1e-6) for r in rows])
        pick = [int(i) for i in rng.choice(ids, size=min(n, len(ids)), replace=False,
                                           p=w / w.sum())]
        rows = {}
        for k in range(0, len(pick), 500):      # SQLite caps the parameters of one query
            chunk = pick[k:k + 500]
            rows.update((r[0], r[1:]) for r in self.db.execute(
                f'SELECT id, episode, png FROM frames WHERE id IN '
                f'({",".join("?" * len(chunk))})', chunk))
        out = []
        for fid in pick:                        # in the sampled order
            if fid not in rows:                 # capped away by the writer meanwhile
                continue
            episode, png = rows[fid]
            bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
            if bgr is not None:                 # an unreadable row is skipped, not fatal
                out.append((int(episode), np.ascontiguousarray(bgr[:, :, ::-1])))
        return out

    def episodes(self) -> list[tuple[int, int, float]]:
        """(episode id, steps, mean salience) for every stored episode."""
        return [tuple(r) for r in self.db.execute(
            'SELECT episode, COUNT(*), AVG(salience) FROM steps GROUP BY episode ORDER BY '
            'episode')]

    def hold_out(self, episode: int) -> None:
        """Mark an episode as a measurement (e.g. the morning suite): never trained on."""
        with self.db:
            self.db.execute('INSERT OR IGNORE INTO held_out VALUES (?)', (int(episode),))

    def held_out(self) -> set[int]:
        """Episode ids marked by ``hold_out``."""
        return {r[0] for r in self.db.execute('SELECT episode FROM held_out')}

    def episode(self, episode: int) -> list[Step]:
        """All stored steps of one episode in time order."""
        rows = self.db.execute('SELECT episode, t, features, trust, age, action, teacher, '
                               'reward, salience, refs FROM steps WHERE episode=? ORDER BY t',
                               (int(episode),))
        return [Step(r[0], r[1], self._features(r[2], r[9]), np.frombuffer(r[3], np.float32),
                     np.frombuffer(r[4], np.float32), r[5], r[6], r[7], r[8]) for r in rows]

    def sample_episodes(self, n: int, rng: np.random.Generator,
                        listed: list[tuple[int, int, float]] | None = None) -> list[int]:
        """Pick up to ``n`` episode ids, without replacement, weighted by mean salience.

        From ``listed`` (what ``episodes()`` returned) when given: the memory node may
        write a new episode meanwhile, and a caller's counts must cover every pick.
        """
        eps = self.episodes() if listed is None else listed
        if not eps:
            return []
        ids = np.array([e[0] for e in eps])
        w = np.array([max(e[2], 1e-6) for e in eps])
        k = min(n, len(ids))
        return [int(x) for x in rng.choice(ids, size=k, replace=False, p=w / w.sum())]

    def export_parquet(self, path: str, episodes=None, t_min: float = -np.inf,
                       t_max: float = np.inf) -> int:
        """Write a slice (episodes, time range) to a Parquet file for analysis; return rows.

        One row per step: episode, t, action, teacher, reward, salience and the
        trust, age and feature vectors as lists; the modality layout is in the
        file's metadata. Written to a temporary file and renamed into place.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq
        query = ('SELECT episode, t, features, trust, age, action, teacher, reward, salience, '
                 'refs FROM steps WHERE t >= ? AND t <= ?')
        args = [float(t_min), float(t_max)]
        if episodes is not None:
            ids = [int(e) for e in episodes]
            query += f' AND episode IN ({",".join("?" * len(ids))})'
            args += ids
        rows = self.db.execute(query + ' ORDER BY episode, t', args).fetchall()
        vec = lambda i: [np.frombuffer(r[i], np.float32).tolist() for r in rows]  # noqa: E731
        table = pa.table({
            'episode': [r[0] for r in rows], 't': [r[1] for r in rows],
            'action': [r[5] for r in rows], 'teacher': [r[6] for r in rows],
            'reward': [r[7] for r in rows], 'salience': [r[8] for r in rows],
            'trust': vec(3), 'age': vec(4),
            'features': [self._features(r[2], r[9]).tolist() for r in rows]})
        table = table.replace_schema_metadata({'sage_modalities': json.dumps(self.modalities)})
        tmp = f'{path}.tmp-{os.getpid()}'
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        return len(rows)

    def close(self) -> None:
        """Close the connection."""
        self.db.close()


def main(argv=None) -> int:
    """Export a slice of a store to Parquet (``python -m sage_memory.store --help``)."""
    import argparse
    ap = argparse.ArgumentParser(prog='python -m sage_memory.store',
                                 description='Export a slice of an experience store to Parquet.')
    ap.add_argument('store', help='experience store (SQLite file)')
    ap.add_argument('out', help='Parquet file to write')
    ap.add_argument('--episodes', type=int, nargs='*', help='episode ids (default: all)')
    ap.add_argument('--t-min', type=float, default=-np.inf, help='earliest step time, s')
    ap.add_argument('--t-max', type=float, default=np.inf, help='latest step time, s')
    args = ap.parse_args(argv)
    if not os.path.exists(args.store):
        ap.error(f'no experience store at {args.store}')
    store = ExperienceStore(args.store)
    try:
        n = store.export_parquet(args.out, args.episodes, args.t_min, args.t_max)
    finally:
        store.close()
    print(f'wrote {n} steps to {args.out}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
