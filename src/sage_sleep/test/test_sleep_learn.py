"""Learning from the world: demonstrations, fault augmentation, the experience store."""

import numpy as np
import pytest
import torch
from sage_coherence.model import CoherenceModel
from sage_memory.store import ExperienceStore, StoreError
from sage_sim.world import WorldConfig
from sage_sleep.learn import augment_faults, collect, default_config, record_day, train
from sage_sleep.targets import episodes_from_store, heldout_accuracy


@pytest.fixture(scope='module')
def demos():
    # the operator: a teacher that succeeds in every scene (the planner misses some detours)
    return collect(range(0, 6), teacher='operator'), collect(range(100, 103), teacher='operator')


def test_demonstrations_are_labelled_and_aligned(demos):
    train_eps, _ = demos
    cfg = default_config()
    for ep in train_eps:
        assert ep.success and len(ep.features) == len(ep.teacher) == len(ep.reward)
        assert ep.features.shape[1] == sum(cfg.modalities.values())
        assert np.isfinite(ep.features).all()
    cognition = list(cfg.modalities).index('cognition_main')
    assert all(ep.trust[1:, cognition].min() > 0.9 for ep in train_eps)  # plan is sticky


@pytest.mark.slow     # two minutes of real training on 2 cores: `make test` runs it
def test_training_beats_the_untrained_model_on_held_out_episodes(demos):
    train_eps, test_eps = demos
    torch.manual_seed(0)
    model = CoherenceModel(default_config())
    before = heldout_accuracy(model, test_eps)
    train(model, train_eps, updates=150, seed=0)
    after = heldout_accuracy(model, test_eps)
    assert after > before + 0.15


def test_fault_augmentation_marks_what_it_corrupts(demos):
    ep = demos[0][0]
    cfg = default_config()
    names, dims = list(cfg.modalities), list(cfg.modalities.values())
    rng = np.random.default_rng(0)
    seen = 0
    for _ in range(20):
        aug, target = augment_faults(ep, names, dims, rng, p=1.0)
        # a clean episode: sensors are to be trusted except where corrupted
        assert np.isnan(target[:, names.index('cognition_main')]).all()
        rows, cols = np.nonzero(target == 0)
        assert len(rows) and len(set(cols)) == 1
        m = int(cols[0])
        assert names[m] in ('vision', 'audio', 'imu')
        others = [i for i, n in enumerate(names) if n in ('vision', 'audio', 'imu') and i != m]
        assert (target[:, others] == 1).all()
        lo, hi = sum(dims[:m]), sum(dims[:m + 1])
        changed = np.any(aug.features[rows, lo:hi] != ep.features[rows, lo:hi])
        seen += changed
        untouched = np.delete(np.arange(aug.features.shape[1]), np.arange(lo, hi))
        assert np.array_equal(aug.features[:, untouched], ep.features[:, untouched])
    assert seen >= 10


def test_parallel_rollouts_equal_serial_ones():
    torch.manual_seed(0)
    model = CoherenceModel(default_config())   # untrained: the coin flips matter
    serial = collect(range(200, 202), model, beta=0.5, seed=3)
    parallel = collect(range(200, 202), model, beta=0.5, seed=3, workers=2)
    for a, b in zip(serial, parallel):
        assert np.array_equal(a.teacher, b.teacher) and np.allclose(a.features, b.features)


def test_a_day_goes_to_the_store_and_back(tmp_path, demos):
    torch.manual_seed(0)
    model = CoherenceModel(default_config())
    cfg = default_config()
    store = ExperienceStore(str(tmp_path / 'exp.db'), cfg.modalities)
    day = record_day(model, range(300, 302), store, episode_offset=7)
    assert store.count() == day['steps'] > 0
    assert [e[0] for e in store.episodes()] == [7, 8]
    eps = episodes_from_store(store, [7, 8])
    assert sum(len(e.teacher) for e in eps) == day['steps']
    assert all((e.teacher >= 0).all() for e in eps)
    with pytest.raises(StoreError, match='modalities'):
        ExperienceStore(str(tmp_path / 'exp.db'), {'vision': 3})
    reopened = ExperienceStore(str(tmp_path / 'exp.db'))
    assert reopened.count() == day['steps']


def test_a_demonstration_day_is_driven_by_the_teacher_and_workers_change_nothing(tmp_path):
    torch.manual_seed(0)
    model = CoherenceModel(default_config())      # untrained: it would not reach a beacon
    cfg = default_config()
    short = WorldConfig(time_limit_s=8.0)
    stores = [ExperienceStore(str(tmp_path / f'{k}.db'), cfg.modalities) for k in range(3)]
    demo = record_day(model, range(310, 314), stores[0], world_config=short, driver='teacher')
    demo2 = record_day(model, range(310, 314), stores[1], world_config=short, driver='teacher',
                       workers=2)
    own = record_day(model, range(310, 314), stores[2], world_config=short)
    assert demo == demo2 and demo['success'] > own['success']
    for e in range(4):
        serial, parallel = stores[0].episode(e), stores[1].episode(e)
        assert len(serial) == len(parallel) > 0
        for a, b in zip(serial, parallel):
            assert a.t == b.t and np.array_equal(a.features, b.features)
    steps = stores[0].episode(0)
    assert all(s.action == s.teacher for s in steps)        # the teacher drove
    with pytest.raises(ValueError, match='unknown driver'):
        record_day(model, [310], stores[0], driver='operator')
    with pytest.raises(ValueError, match='unknown teacher'):     # from the world, unstored
        record_day(model, [310], stores[0], teacher='oracel')
    assert stores[0].count() == demo['steps']


def coherence_target(tmp_path, cfg):
    """The sleep node's coherence target over tmp_path's store, from an untrained model."""
    from sage_common.checkpoints import CheckpointStore
    from sage_sleep.targets import build_targets
    CheckpointStore(str(tmp_path / 'models'), 'coherence').commit(
        CoherenceModel(cfg).state_dict(), {'config': cfg.to_dict()})
    targets, _ = build_targets({'targets': ['coherence'], 'model_dir': str(tmp_path / 'models'),
                                'store_path': str(tmp_path / 'exp.db'), 'keep_versions': 3,
                                'seed': 0, 'validation_episodes': 1, 'regression_episodes': 1})
    return targets['coherence']


def test_a_store_without_places_trains_the_model_with_places_absent(tmp_path, demos):
    """The memory node stores its own layout (no places); the model's layout comes back."""
    from sage_memory.store import ABSENT_AGE_S
    from sage_sleep.targets import store_episodes
    cfg = default_config()
    memory = {m: n for m, n in cfg.modalities.items() if m != 'places'}
    store = ExperienceStore(str(tmp_path / 'exp.db'), memory)
    train_eps, _ = demos
    store_episodes(store, train_eps[:2], cfg.modalities, episode_offset=40)
    back = episodes_from_store(store, [40, 41], cfg.modalities)
    names = list(cfg.modalities)
    places = names.index('places')
    width = sum(memory.values())         # places is the last block of the model's layout
    for original, stored in zip(train_eps[:2], back):
        assert stored.features.shape == original.features.shape
        assert np.allclose(stored.features[:, :width], original.features[:, :width])
        assert not stored.features[:, width:].any()
        assert not stored.trust[:, places].any() and (stored.age[:, places] == ABSENT_AGE_S).all()
        assert np.array_equal(stored.teacher, original.teacher)
    with pytest.raises(StoreError, match='values'):      # a block of another size is refused
        episodes_from_store(store, [40], dict(cfg.modalities, imu=3))
    data = coherence_target(tmp_path, cfg).select({'max_experiences': 10_000})
    assert data is None                  # two episodes: fewer than a cycle needs


def test_episodes_held_out_in_the_store_are_scored_never_learned(tmp_path, demos):
    """The world marks the morning suite held out (the measure); a night may not train on it."""
    from sage_sleep.targets import store_episodes
    cfg = default_config()
    store = ExperienceStore(str(tmp_path / 'exp.db'), cfg.modalities)
    train_eps, _ = demos
    store_episodes(store, train_eps, cfg.modalities, episode_offset=51)    # ids 51 .. 56
    store.hold_out(52)
    store.hold_out(53)
    assert store.held_out() == {52, 53}
    data = coherence_target(tmp_path, cfg).select({'max_experiences': 100_000})
    trained = {e.meta['episode'] for e in data['train']}
    held = {e.meta['episode'] for e in data['held_out']}
    assert trained == {51, 54, 56} and held == {52, 53, 55}     # 55: one in five


def night_params(tmp_path) -> dict:
    """A day of teacher episodes in a store and an untrained base: what a night needs."""
    cfg = default_config()
    store = ExperienceStore(str(tmp_path / 'exp.db'), cfg.modalities)
    record_day(CoherenceModel(cfg), range(300, 306), store, driver='teacher',   # 4 to learn
               world_config=WorldConfig(time_limit_s=6.0))
    coherence_target(tmp_path, cfg)                 # commits the untrained base
    return {'targets': ['coherence'], 'model_dir': str(tmp_path / 'models'),
            'store_path': str(tmp_path / 'exp.db'), 'keep_versions': 3, 'seed': 0,
            'validation_episodes': 1, 'regression_episodes': 1}


def test_a_night_runs_in_its_own_process_and_leaves_nothing_behind(tmp_path, demos):
    import time

    import psutil
    from sage_sleep.consolidate import Cancelled, CycleFailed, run_cycle_in_child
    params = night_params(tmp_path)
    me = psutil.Process()

    def cycle(report, should_stop=lambda: False, names=('coherence',)):
        results = []
        run_cycle_in_child(params, list(names), time.monotonic() + 40, 10000, report,
                           should_stop, results.append)
        return results

    def night_process():
        return [c for c in me.children() if 'spawn_main' in ' '.join(c.cmdline())]
    rss, phases, workers = me.memory_info().rss, [], set()

    def report(phase, progress, message):
        phases.append((phase, round(progress, 2)))
        workers.update(c.pid for c in night_process())
    results = cycle(report)
    assert [r.target for r in results] == ['coherence'] and results[0].budget_s > 30
    assert phases[0][0] == 'select' and phases[-1] == ('commit', 1.0)
    assert {'validate', 'commit'} <= {p for p, _ in phases} and workers, results[0].message
    assert me.memory_info().rss - rss < 60e6, 'the night left its memory behind here'
    assert not night_process()

    def kill_it(phase, progress, message):              # the kernel's OOM killer, say
        if phase == 'validate':
            for c in night_process():
                c.kill()
    with pytest.raises(CycleFailed, match='died .exit code -9: killed'):
        cycle(kill_it)
    with pytest.raises(Cancelled):
        cycle(lambda *_: None, should_stop=lambda: True)
    with pytest.raises(CycleFailed, match='vision_encoder failed'):   # not configured
        cycle(lambda *_: None, names=['vision_encoder'])


def test_a_night_ends_when_its_node_is_killed(tmp_path, demos):
    """kill -9 of the node (or `sage run` giving up on it) leaves no night training on."""
    import json
    import signal
    import subprocess
    import sys

    import psutil
    params = night_params(tmp_path)
    node = subprocess.Popen([sys.executable, '-c', f"""
import json, time
from sage_sleep.consolidate import run_cycle_in_child
run_cycle_in_child(json.loads({json.dumps(json.dumps(params))}), ['coherence'],
                   time.monotonic() + 600, 10000, lambda *a: print(*a, flush=True),
                   lambda: False, lambda r: None)
"""], stdout=subprocess.PIPE, text=True)
    try:
        node.stdout.readline()                     # the night's first report: it is training
        night = psutil.Process(node.pid).children()     # and multiprocessing's tracker
        assert any('spawn_main' in ' '.join(c.cmdline()) for c in night)
        node.send_signal(signal.SIGKILL)
        node.wait()
        gone, alive = psutil.wait_procs(night, timeout=30)
        assert not alive, 'the night trained on without its node'
    finally:
        node.kill()
        for p in psutil.Process().children(recursive=True):
            p.kill()
