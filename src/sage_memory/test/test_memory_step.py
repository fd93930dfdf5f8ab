"""The memory step without ROS: what the node calls, on real SQLite and a real sidecar."""

import os

import numpy as np
import pytest
from sage_common.features import FeatureRejected
from sage_memory.memory import Memory, MemoryConfig

DIMS = {'vision': 6, 'imu': 4}


def memory(tmp_path, **kw):
    return Memory(MemoryConfig(modalities=DIMS, store_path=str(tmp_path / 'exp.db'),
                               sidecar_path=str(tmp_path / 'side.npz'), key_dim=32, slots=16,
                               **kw), log=lambda m: None)


def feed(mem, rng, t):
    for m, d in DIMS.items():
        mem.put_feature(m, rng.normal(size=d), 0.9, t)


def test_step_scores_stores_labels_and_expires_them(tmp_path):
    mem, rng = memory(tmp_path, label_timeout_s=0.5), np.random.default_rng(0)
    assert mem.step(0.0, 0.0) is None                      # nothing sensed yet
    mem.set_teacher(3, wall_s=0.0)
    for i in range(5):
        feed(mem, rng, 0.1 * i)
        mem.add_reward(1.0)
        out = mem.step(0.1 * i, wall_s=0.1 * i)
        assert out.stored and 0 <= out.scores.total <= 1 and out.recalled.shape == (10,)
    feed(mem, rng, 1.0)
    assert mem.step(1.0, wall_s=1.0).stored                # the label is 1 s old now
    rows = [s for ep in mem.store.episodes() for s in mem.store.episode(ep[0])]
    assert [r.teacher for r in rows] == [3] * 5 + [-1]
    assert rows[0].reward == 1.0 and rows[-1].reward == 0.0   # reward belongs to its step
    assert mem.steps == 6 and mem.sidecar.writes >= 6      # every salient step is written
    assert mem.step(2.9, wall_s=2.9) is not None          # 1.9 s old: still sensed
    assert mem.step(3.1, wall_s=3.1) is None               # every modality dropped: asleep
    assert mem.steps == 7


def test_bad_inputs_are_refused_with_reasons_and_the_state_is_kept(tmp_path):
    mem, rng = memory(tmp_path), np.random.default_rng(1)
    feed(mem, rng, 0.0)
    with pytest.raises(FeatureRejected, match='length'):
        mem.put_feature('vision', [1.0], 0.9, 0.0)
    with pytest.raises(FeatureRejected, match='NaN'):
        mem.put_feature('imu', [np.nan] * 4, 0.9, 0.0)
    with pytest.raises(ValueError, match='finite'):
        mem.add_reward(float('inf'))
    with pytest.raises(FeatureRejected, match='beyond'):      # finite but absurd
        mem.put_feature('imu', [1e30, 0, 0, 0], 0.9, 0.0)
    with pytest.raises(ValueError, match='out of range'):
        mem.set_episode(10**30)                            # fits JSON, not the store
    with pytest.raises(ValueError, match='finite vector'):
        mem.recall([np.nan])
    assert mem.step(0.0, 0.0).stored
    recalled, confidence = mem.recall([])                  # the current state
    assert recalled.shape == (10,) and 0 <= confidence <= 1


def test_a_full_disk_is_counted_not_raised(tmp_path):
    mem, rng = memory(tmp_path), np.random.default_rng(2)
    feed(mem, rng, 0.0)
    mem.store.close()                                      # every write now fails
    out = mem.step(0.0, 0.0)
    assert not out.stored and mem.store_errors == 1 and mem.store_error


def test_a_store_of_another_layout_is_kept_aside_and_a_new_one_started(tmp_path):
    """An older SAGE's store (other modalities) is renamed, never lost, never refused."""
    from sage_memory.store import ExperienceStore, Step
    old = ExperienceStore(str(tmp_path / 'exp.db'), {'vision': 6})
    old.insert(Step(0, 0.0, np.zeros(6, np.float32), np.ones(1, np.float32),
                    np.zeros(1, np.float32), 0, 0, 0.0, 0.5))
    old.close()
    notes = []
    mem = Memory(MemoryConfig(modalities=DIMS, store_path=str(tmp_path / 'exp.db'),
                              sidecar_path=str(tmp_path / 'side.npz'), key_dim=32, slots=16),
                 log=notes.append)
    assert mem.store.modalities == DIMS and mem.store.count() == 0
    kept = [n for n in os.listdir(tmp_path) if n.startswith('exp.db.')]
    assert len(kept) == 1 and 'kept it as' in notes[0]
    assert ExperienceStore(str(tmp_path / kept[0])).count() == 1
