"""Sleep trains a LoRA adapter of the embedded model on the recorded cognition exchanges."""

import json
import os
import time

import pytest
from sage_common.checkpoints import CheckpointStore
from sage_cognition.backends import LocalBackend
from sage_cognition.exchanges import ExchangeLog, read_exchanges
from sage_cognition.lora import base_state
from sage_cognition.thought import build_messages
from sage_memory.store import ExperienceStore
from sage_sleep.consolidate import run_target
from sage_sleep.targets import build_targets, lora_base, LoraTarget

pytestmark = pytest.mark.slow     # LoRA nights on SmolLM2: a minute

COLOURS = ('red', 'blue', 'green', 'yellow', 'purple', 'orange', 'white', 'black', 'pink',
           'grey', 'brown', 'silver')


def record_day(path: str) -> None:
    """A day of exchanges as the cognition node's writer records them (reward window 1 s)."""
    log = ExchangeLog(path, window_s=1.0)
    now = time.monotonic()
    for i, colour in enumerate(COLOURS):
        messages = build_messages(f'go to the {colour} beacon', {
            'coherence': f'score 0.{50 + i}; trust used: vision 0.90, imu 0.80; ACT steps 2',
            'salience': 0.3 + 0.05 * i})
        log.add({'t': 1000.0 + i, 'name': 'advisor', 'backend': 'local',
                 'messages': messages, 'trust': 0.9,
                 'answer': f'Turn towards the {colour} beacon and drive to it slowly.'},
                now=now + i)
        log.reward(1.0, now=now + i + 0.5)
    for i in range(3):                    # distrusted thoughts: never learned from
        log.add({'t': 2000.0 + i, 'name': 'advisor', 'messages': messages, 'trust': 0.1,
                 'answer': 'left left left left left left'}, now=now)
    assert log.flush(now=now + 0.5) == 0 and log.pending() == 15   # still in their window
    assert log.flush(now=now + 20) == 15 and log.written == 15
    with open(path, 'a') as f:
        f.write('{"torn line from a cras')          # a crash mid-line: skipped, repaired
    log.add({'t': 3000.0, 'name': 'advisor', 'messages': messages, 'trust': 0.2,
             'answer': 'stop'})
    assert log.flush(force=True) == 1


@pytest.fixture(scope='module')
def llm():
    backend = LocalBackend(threads=1)      # one thread: fastest on a small shared CPU
    backend.load()
    return backend


@pytest.fixture(scope='module')
def day(llm, tmp_path_factory):
    """The exchanges, the LoRA store with its base, and the first night's result."""
    root = tmp_path_factory.mktemp('lora')
    path = str(root / 'exchanges.jsonl')
    record_day(path)
    ckpts = CheckpointStore(str(root / 'models'), 'lora')
    lora_base(ckpts)
    lora_base(ckpts)                                   # the base is committed once
    target = LoraTarget(path, backend=llm, lr=1e-3, max_steps=12)
    result = run_target(target, ckpts, {'train_s': 60.0}, lambda *a: None, lambda: False)
    return path, ckpts, target, result


def test_exchanges_are_selected_by_trust_and_too_few_learn_nothing(tmp_path):
    path = str(tmp_path / 'exchanges.jsonl')
    record_day(path)
    records, bad = read_exchanges(path)
    assert len(records) == 16 and bad == 1 and records[-1]['answer'] == 'stop'
    assert records[0]['reward_after'] == 1.0 and records[0]['rewards_after'] == 1
    target = LoraTarget(path)                          # no model is loaded for selection
    data = target.select({'max_experiences': 1000})
    assert len(data['train']) == 9 and len(data['held_out']) == 3   # every fifth held out
    assert all('left left' not in a for _, a in data['train'] + data['held_out'])
    assert data['held_out'][0][1].startswith('Turn towards the silver')   # newest first
    assert target.select({'max_experiences': 7}) is None           # capped below the minimum
    assert target._llm is None
    models = tmp_path / 'models'
    ExperienceStore(str(tmp_path / 'exp.db'), {'vision': 3})
    targets, stores = build_targets({
        'model_dir': str(models), 'store_path': str(tmp_path / 'exp.db'),
        'targets': ['lora'], 'keep_versions': 5, 'seed': 0, 'exchanges_path': path})
    assert isinstance(targets['lora'], LoraTarget) and targets['lora'].path == path
    assert stores['lora'].versions() == [1] and targets['lora']._llm is None   # fast
    assert stores['lora'].load_state(stores['lora'].open()) == base_state()


def test_lora_night_commits_an_adapter_that_learned_without_collapsing(day):
    _, ckpts, target, result = day
    assert result.committed, result.message
    before, after = result.before, result.after
    print(f"held-out loss {before['heldout_loss']:.3f} -> {after['heldout_loss']:.3f}, "
          f"perplexity {before['perplexity']:.2f} -> {after['perplexity']:.2f}, repetition "
          f"{before['repetition']:.3f} -> {after['repetition']:.3f}; {target.last_train}")
    assert after['heldout_loss'] < 0.5 * before['heldout_loss']
    assert after['perplexity'] <= 1.1 * before['perplexity']
    assert after['repetition'] <= before['repetition'] + 0.1 and after['guard_ok'] == 1.0
    assert ckpts.versions() == [1, 2]
    state = ckpts.load_state(ckpts.open())
    assert state['format'] == 'sage-lora-1' and state['adapter_config']['r'] == 8
    assert any('lora_A' in k for k in state['tensors'])
    meta = json.load(open(os.path.join(ckpts.open().path, 'meta.json')))
    assert meta['metrics']['heldout_loss'] == after['heldout_loss']


def test_a_collapsing_candidate_is_rolled_back_by_the_guards(day, llm):
    path, ckpts, target, first = day
    assert first.committed
    # a learning rate 8x too high: it memorises the answers (held-out loss falls) and
    # wrecks general text, the LoRA collapse that the guards are there for
    wild = LoraTarget(path, backend=llm, lr=8e-3, max_steps=15)
    wild._base = target._base                          # the base's numbers, measured once
    result = run_target(wild, ckpts, {'train_s': 60.0}, lambda *a: None, lambda: False)
    print(f'{result.message}; {wild.last_guard}; before {result.before}; after {result.after}')
    assert not result.committed and 'regression set got worse' in result.message
    assert 'perplexity' in wild.last_guard or 'repetition' in wild.last_guard
    assert wild.last_guard in result.message                    # the reason is told
    assert result.after['guard_ok'] == 0.0
    assert (result.after['perplexity'] > result.after['perplexity_limit']
            or result.after['repetition'] > result.after['repetition_limit'])
    assert ckpts.latest_version() == 2 and ckpts.versions() == [1, 2]
    assert llm.adapter is None                         # the target's model is the base again
