"""The coherence model and its runtimes: shapes, ACT budget, ONNX parity, refusals."""

import math

import numpy as np
import pytest
import torch
from sage_common.checkpoints import CheckpointStore
from sage_coherence.model import CoherenceConfig, CoherenceModel
from sage_coherence.runtime import RuntimeRefused, TorchRuntime, load_runtime

CFG = CoherenceConfig(modalities={'vision': 8, 'imu': 4, 'cognition_main': 6},
                      actions=('stop', 'go'), action_values=((0.0, 0.0), (0.5, 0.0)),
                      max_segments=4)


def inputs(rng, n=1):
    return {m: rng.normal(size=d).astype(np.float32) for m, d in CFG.modalities.items()}


def committed(tmp_path, seed=0, cfg=CFG):
    torch.manual_seed(seed)
    model = CoherenceModel(cfg)
    store = CheckpointStore(str(tmp_path), 'coherence')
    store.commit(model.state_dict(), {'config': cfg.to_dict()})
    return model, str(tmp_path)


def test_low_trust_modality_is_ignored():
    torch.manual_seed(0)
    model = CoherenceModel(CFG).eval()
    rng = np.random.default_rng(0)
    x = torch.from_numpy(np.concatenate(list(inputs(rng).values())))[None]
    trust = torch.tensor([[0.001, 1.0, 1.0]])
    age = torch.zeros(1, 3)
    _, used, _ = model.tokens(x, trust, age)
    assert used[0, 0] < 0.01 and used[0, 1] > 0.99
    x2 = x.clone()
    x2[0, :8] = torch.from_numpy(rng.normal(size=8).astype(np.float32)) * 10
    t1, _, _ = model.tokens(x, trust, age)
    t2, _, _ = model.tokens(x2, trust, age)
    assert torch.allclose(t1[:, 1], t2[:, 1], atol=0.05)   # untrusted content barely counts


def test_gradients_reach_only_the_last_calls_and_the_heads():
    model = CoherenceModel(CFG)
    rng = np.random.default_rng(1)
    x = torch.from_numpy(np.concatenate(list(inputs(rng).values())))[None].repeat(2, 1)
    carry, out = model(model.initial_carry(2), x, torch.ones(2, 3), torch.zeros(2, 3))
    assert not carry.z_H.requires_grad and not carry.z_L.requires_grad
    out['action_logits'].sum().backward()
    assert model.proj[0][1].weight.grad is not None
    assert model.core.L_level.layers[0].mlp.down_proj.weight.grad.abs().sum() > 0


def test_runtime_respects_budget_and_counts_segments():
    torch.manual_seed(0)
    runtime = TorchRuntime(CoherenceModel(CFG), 'test')
    rng = np.random.default_rng(2)
    d = runtime.step(inputs(rng), np.ones(3), np.zeros(3), budget_ms=math.inf)
    assert 1 <= d.act_steps <= CFG.max_segments
    d = runtime.step(inputs(rng), np.ones(3), np.zeros(3), budget_ms=0.0)
    assert d.act_steps == 1 and (d.budget_exhausted or d.act_steps == CFG.max_segments)
    assert d.continuous in CFG.action_values and 0 <= d.confidence <= 1


def test_carry_persists_across_cycles_until_reset():
    torch.manual_seed(0)
    runtime = TorchRuntime(CoherenceModel(CFG), 'test')
    rng = np.random.default_rng(3)
    x = inputs(rng)
    runtime.step(x, np.ones(3), np.zeros(3))
    z1 = runtime.carry.z_H.clone()
    runtime.step(x, np.ones(3), np.zeros(3))
    assert not torch.equal(z1, runtime.carry.z_H)
    runtime.reset()
    fresh = runtime.model.initial_carry(1)
    assert torch.equal(runtime.carry.z_H, fresh.z_H)


def test_onnx_runtime_matches_torch(tmp_path):
    model, root = committed(tmp_path)
    torch_rt = load_runtime(root, backend='torch')
    onnx_rt = load_runtime(root, backend='onnxruntime')
    assert onnx_rt.backend == 'onnxruntime'
    rng = np.random.default_rng(4)
    for _ in range(3):
        x, trust, age = inputs(rng), rng.uniform(0.2, 1, 3), rng.uniform(0, 1, 3)
        a = torch_rt.step(x, trust, age)
        b = onnx_rt.step(x, trust, age)
        assert a.action_id == b.action_id and a.act_steps == b.act_steps
        assert abs(a.score - b.score) < 1e-4 and np.allclose(a.trust_used, b.trust_used,
                                                             atol=1e-4)


def test_tensorrt_falls_back_with_a_reason(tmp_path, caplog):
    _, root = committed(tmp_path)
    runtime = load_runtime(root, backend='tensorrt')
    assert runtime.backend in ('onnxruntime', 'torch')
    assert 'tensorrt unavailable' in caplog.text
    assert 'TensorRT is not installed' in caplog.text or 'CUDA GPU' in caplog.text


def test_tensorrt_runtime_matches_torch(tmp_path):
    """Where TensorRT and a GPU exist (a Jetson, the H200), the engine decides as torch does."""
    pytest.importorskip('tensorrt')
    if not torch.cuda.is_available():
        pytest.skip('TensorRT needs a CUDA GPU')
    _, root = committed(tmp_path)
    trt_rt, torch_rt = load_runtime(root, backend='tensorrt'), load_runtime(root)
    assert trt_rt.backend == 'tensorrt'
    rng = np.random.default_rng(4)
    for _ in range(3):
        x, trust, age = inputs(rng), rng.uniform(0.2, 1, 3), rng.uniform(0, 1, 3)
        a, b = torch_rt.step(x, trust, age), trt_rt.step(x, trust, age)
        assert a.action_id == b.action_id and a.act_steps == b.act_steps
        assert abs(a.score - b.score) < 1e-3


def test_bad_checkpoints_are_refused(tmp_path):
    with pytest.raises(RuntimeRefused, match='no committed'):
        load_runtime(str(tmp_path))
    model, root = committed(tmp_path)
    with pytest.raises(RuntimeRefused, match='modalities'):
        load_runtime(root, modalities=['vision', 'audio'])
    state = model.state_dict()
    state['action_head.bias'] = torch.full_like(state['action_head.bias'], float('nan'))
    CheckpointStore(root, 'coherence').commit(state, {'config': CFG.to_dict()})
    with pytest.raises(RuntimeRefused, match='non-finite'):
        load_runtime(root)
    with pytest.raises(RuntimeRefused, match='sha256'):
        load_runtime(root, expect_sha256='0' * 64)


SET_CFG = CoherenceConfig(modalities={'vision': 8, 'cognition_main': 6, 'places': 3 * 10},
                          actions=('stop', 'go'), action_values=((0.0, 0.0), (0.5, 0.0)),
                          token_sets={'places': [3, 6]}, match='cognition_main')


def places_input(rng, valid):
    """Three tokens of [valid, 3 numbers, a 6-number label embedding]; the first is 'go'."""
    instruction = rng.normal(size=6).astype(np.float32)
    tokens = rng.normal(size=(3, 10)).astype(np.float32)
    tokens[:, 0] = valid
    tokens[0, 4:] = instruction                  # the label the instruction names
    return np.concatenate([rng.normal(size=8), instruction, tokens.reshape(-1)]).astype(
        np.float32), tokens


def test_token_sets_mask_their_padding_and_match_labels_to_the_instruction():
    torch.manual_seed(0)
    model = CoherenceModel(SET_CFG).eval()
    assert SET_CFG.seq_len == 1 + 1 + 1 + 3
    rng = np.random.default_rng(5)
    x, _ = places_input(rng, [1, 1, 0])
    trust, age = torch.ones(1, 3), torch.zeros(1, 3)
    tokens, _, mask = model.tokens(torch.from_numpy(x)[None], trust, age)
    assert tokens.shape == (1, 6, 64) and mask.tolist() == [[True, True, True, True, True,
                                                             False]]
    changed = x.copy()
    changed[-9:] = rng.normal(size=9) * 100      # the padding slot's content (not its flag)
    outs = []
    for features in (x, changed):
        carry = model.initial_carry(1)
        for _ in range(3):
            carry, out = model(carry, torch.from_numpy(features)[None], trust, age)
        outs.append(out['action_logits'])
    assert torch.allclose(outs[0], outs[1], atol=1e-5)      # padding is never attended to
    # the cosine with the instruction and its margin to the best are inputs of each token
    proj = model.proj[2]
    seen = {}
    proj.register_forward_hook(lambda m, i, o: seen.update({'in': i[0]}))
    model.tokens(torch.from_numpy(x)[None], trust, age)
    cos, margin = seen['in'][0, :, -2], seen['in'][0, :, -1]
    assert cos[0] > 0.99 and margin[0] == 0 and (margin[1] < 0)


def test_token_set_sizes_that_do_not_fit_are_refused():
    bad = CoherenceConfig(modalities={'places': 31, 'cognition_main': 6}, actions=('stop',),
                          token_sets={'places': [3, 6]}, match='cognition_main')
    with pytest.raises(ValueError, match='sizes do not fit'):
        CoherenceModel(bad)


def test_the_base_replaces_a_model_of_other_modalities_and_nothing_else(tmp_path):
    from sage_coherence.runtime import install_base
    committed(tmp_path)                                  # an older model: other modalities
    ckpt = install_base(str(tmp_path))
    assert ckpt is not None and ckpt.version == 2
    assert 'places' in ckpt.meta['config']['modalities']
    assert install_base(str(tmp_path)) is None           # now it is there: left alone
    assert CheckpointStore(str(tmp_path), 'coherence').versions() == [1, 2]
