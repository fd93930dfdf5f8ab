"""The sidecar and SNARC: recall, salience gating, persistence, refusal of bad input."""

import subprocess
import sys

import numpy as np
import pytest
from sage_memory.sidecar import Sidecar, SidecarError
from sage_memory.snarc import Snarc

D, DV = 96, 24


def patterns(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, D)).astype(np.float32),
            rng.standard_normal((n, DV)).astype(np.float32), rng)


def recalled(mem, x, y, rng, noise=0.3):
    r, _ = mem.read(x + noise * rng.standard_normal(D).astype(np.float32))
    return float(r @ y / (np.linalg.norm(r) * np.linalg.norm(y) + 1e-9)) > 0.9


def test_recalls_from_corrupted_keys_up_to_its_size():
    X, Y, rng = patterns(32)
    mem = Sidecar(D, d=128, r=32, value_dim=DV)
    for x, y in zip(X, Y):
        mem.write(x, y, 1.0)
    assert np.mean([recalled(mem, x, y, rng) for x, y in zip(X, Y)]) >= 0.9
    _, confidence = mem.read(rng.standard_normal(D))
    assert confidence < 0.5              # an unrelated query is not confidently recalled


def test_salient_events_are_not_crowded_out_by_routine_ones():
    X, Y, rng = patterns(200)
    mem = Sidecar(D, d=128, r=32, value_dim=DV)
    salient = set(range(0, 200, 20))      # 10 salient among 190 routine steps
    for i, (x, y) in enumerate(zip(X, Y)):
        mem.write(x, y, 1.0 if i in salient else 0.1)
    assert all(recalled(mem, X[i], Y[i], rng) for i in salient)
    assert mem.nbytes == Sidecar(D, d=128, r=32, value_dim=DV).nbytes   # constant size


def test_the_lead_up_recalls_the_salient_event():
    X, Y, _ = patterns(6)
    mem = Sidecar(D, d=128, r=16, value_dim=DV, trace_decay=0.5)
    for i in range(5):                     # routine steps, then a salient event
        mem.write(X[i], Y[i], 0.0)
    mem.write(X[5], Y[5], 1.0)
    trace_query = mem.P @ (X[4] + 0.5 * X[3])
    r, _ = mem.read(key=trace_query / np.linalg.norm(trace_query))
    assert r @ Y[5] / (np.linalg.norm(r) * np.linalg.norm(Y[5])) > 0.9


def test_binding_does_not_blur_the_events_themselves():
    X, Y, rng = patterns(16)
    mem = Sidecar(D, d=128, r=32, value_dim=DV)
    for x, y in zip(X, Y):                 # a run of salient events, nothing routine between
        mem.write(x, y, 1.0)
    assert not mem.trace.any()             # committed events are not "lead-up"
    assert all(recalled(mem, x, y, rng) for x, y in zip(X, Y))


def test_a_full_memory_forgets_old_events_slowly_and_takes_new_ones():
    X, Y, rng = patterns(24)
    mem = Sidecar(D, d=128, r=8, value_dim=DV, forget=0.01)
    for x, y in zip(X[:8], Y[:8]):         # fill every slot with very salient events
        mem.write(x, y, 1.0)
    assert mem.write(X[8], Y[8], 0.6) is None          # too soon: all held are stronger
    for _ in range(60):                                # time passes (routine, unwritten)
        mem.write(X[9], Y[9], 0.0)
    assert mem.write(X[10], Y[10], 0.6) is not None    # now faded below 0.6
    assert recalled(mem, X[10], Y[10], rng)
    never = Sidecar(D, d=128, r=8, value_dim=DV, forget=0.0)
    for x, y in zip(X[:8], Y[:8]):
        never.write(x, y, 1.0)
    for _ in range(60):
        never.write(X[9], Y[9], 0.0)
    assert never.write(X[10], Y[10], 0.6) is None      # without forgetting it freezes


def test_bad_input_is_rejected_and_never_written():
    mem = Sidecar(D, r=8, value_dim=DV)
    for bad in (np.full(D, np.nan), np.ones(D + 1)):
        with pytest.raises(ValueError):
            mem.write(bad, np.zeros(DV), 1.0)
    assert mem.writes == 0 and mem.fill == 0


def test_a_fresh_process_reads_back_what_was_stored(tmp_path):
    X, Y, _ = patterns(8)
    mem = Sidecar(D, d=64, r=16, value_dim=DV, seed=7)
    for x, y in zip(X, Y):
        mem.write(x, y, 1.0)
    path = mem.save(str(tmp_path / 'sidecar.npz'))
    np.save(tmp_path / 'x.npy', X[3])
    code = ('import numpy as np; from sage_memory.sidecar import Sidecar; '
            f'm = Sidecar.load({path!r}); r, c = m.read(np.load({str(tmp_path / "x.npy")!r})); '
            'print(" ".join(map(str, r.tolist())), c)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True).stdout.split()
    here, confidence = mem.read(X[3])
    there = np.array(out[:-1], np.float32)
    assert np.allclose(there, here, atol=1e-5) and float(out[-1]) == pytest.approx(confidence)
    assert there @ Y[3] / (np.linalg.norm(there) * np.linalg.norm(Y[3])) > 0.99


def test_a_corrupted_snapshot_is_refused(tmp_path):
    mem = Sidecar(D, r=8, value_dim=DV)
    mem.write(np.ones(D), np.ones(DV), 1.0)
    path = mem.save(str(tmp_path / 's.npz'))
    data = bytearray(open(path, 'rb').read())
    data[len(data) // 2] ^= 0xFF
    open(path, 'wb').write(bytes(data))
    with pytest.raises(SidecarError):
        Sidecar.load(path)
    (tmp_path / 'garbage.npz').write_bytes(b'not a snapshot')
    with pytest.raises(SidecarError, match='not a readable'):
        Sidecar.load(str(tmp_path / 'garbage.npz'))
    mem.save(path)                                      # a well-formed file, wrong header
    with np.load(path) as z:
        arrays = dict(z)
    arrays['header'] = np.frombuffer(b'{"format": "sage-sidecar", "version": 99}', np.uint8)
    np.savez(tmp_path / 'future.npz', **arrays)
    with pytest.raises(SidecarError, match='v99'):
        Sidecar.load(str(tmp_path / 'future.npz'))


def test_snarc_scores_surprise_reward_and_conflict():
    rng = np.random.default_rng(0)
    s = Snarc([4, 4])
    base = rng.standard_normal(8).astype(np.float32)
    for _ in range(200):                                 # a predictable, quiet signal
        quiet = s.score(base + 0.01 * rng.standard_normal(8), novelty=0.0)
    jump = base.copy()
    jump[:4] += 5.0                                      # one modality jumps
    loud = s.score(jump, novelty=1.0, reward=1.0, action=1, teacher=2)
    assert 0 <= quiet.total < loud.total <= 1
    assert loud.surprise > quiet.surprise + 0.2 and loud.arousal > quiet.arousal
    assert loud.reward > 0.9 and loud.conflict == 1.0
    with pytest.raises(ValueError):
        s.score(np.full(8, np.inf), 0.0)
    with pytest.raises(ValueError):
        s.score(base, 0.0, reward=float('nan'))


def test_snarc_surprise_sees_a_jump_in_a_wide_projected_modality():
    rng = np.random.default_rng(2)
    s = Snarc([8, 600], surprise_dims=16)               # 600 floats seen through 16
    base = rng.standard_normal(608).astype(np.float32)
    for _ in range(200):
        quiet = s.score(base + 0.01 * rng.standard_normal(608), novelty=0.0)
    jump = base.copy()
    jump[8:] += rng.standard_normal(600).astype(np.float32)
    loud = s.score(jump, novelty=0.0)
    assert loud.surprise > quiet.surprise + 0.2 and loud.conflict > 0.5


def test_snarc_weights_learn_towards_what_predicts_reward():
    s = Snarc([3], weights=(0.2, 0.2, 0.2, 0.2, 0.2), weight_lr=0.2)
    rng = np.random.default_rng(1)
    for i in range(300):
        rewarded = i % 10 == 0
        s.score(rng.standard_normal(3), novelty=1.0 if rewarded else 0.0)
        s.learn(1.0 if rewarded else 0.0)
    assert s.weights[1] == s.weights.max()              # novelty predicted the reward
