"""HRM core: one-step gradient, ACT halting and budget, carry reset, resume, ONNX parity, init."""

import math
import os

import numpy as np
import pytest
import torch

from sage_hrm.inference import ACTRunner
from sage_hrm.model import HRM, HRMConfig, InnerCarry
from sage_hrm.train import Trainer, TrainConfig

torch.set_num_threads(2)


def _cfg(**kw):
    return HRMConfig.tiny(**{**dict(seq_len=8, vocab_size=6, hidden_size=32, halt_max_steps=4),
                             **kw})


class _Counter:
    """Forward hooks recording, per call of a module, whether its output needs grad."""

    def __init__(self, module):
        self.calls = []
        module.register_forward_hook(lambda m, i, o: self.calls.append(o.requires_grad))


@pytest.mark.parametrize('H,L', [(2, 2), (3, 2), (2, 3)])
def test_gradient_only_through_last_L_and_H_calls(H, L):
    torch.manual_seed(0)
    model = HRM(_cfg(H_cycles=H, L_cycles=L)).train()
    lc, hc = _Counter(model.inner.L_level), _Counter(model.inner.H_level)
    x = model.inner.embed(torch.randint(0, 6, (3, 8)))
    carry = model.inner.reset_carry(torch.ones(3, dtype=torch.bool),
                                    model.inner.empty_carry(3, 8))
    _, z_H, _ = model.inner(carry, x)
    assert len(lc.calls) == H * L and len(hc.calls) == H
    assert lc.calls == [False] * (H * L - 1) + [True]
    assert hc.calls == [False] * (H - 1) + [True]
    z_H.sum().backward()
    assert model.inner.L_level.layers[0].mlp.down_proj.weight.grad.abs().sum() > 0
    # the TRM option keeps the graph through the whole last cycle: L_cycles grad calls
    lc.calls.clear()
    model.inner.config.full_backprop_last_cycle = True
    model.inner(carry, x)
    assert lc.calls == [False] * (H - 1) * L + [True] * L


def test_carry_detached_between_segments():
    model = HRM(_cfg()).train()
    b = {'inputs': torch.randint(0, 6, (2, 8))}
    carry, out = model(model.initial_carry(b), b)
    assert out['logits'].requires_grad and not carry.inner.z_H.requires_grad
    assert out['z_H'].shape == (2, 8, 32)


def test_embedding_input_and_no_lm_head():
    model = HRM(_cfg(vocab_size=0)).eval()
    assert not hasattr(model.inner, 'lm_head')
    b = {'embeddings': torch.randn(4, 8, 32)}
    carry, out = model(model.initial_carry(b), b)
    assert 'logits' not in out and out['z_H'].shape == (4, 8, 32)


def _halting_model():
    """A model whose Q head halts sample 0 at once and never halts sample 1 by itself."""
    torch.manual_seed(0)
    model = HRM(_cfg(vocab_size=0, halt_max_steps=5)).eval()
    with torch.no_grad():
        model.inner.q_head.weight.zero_()
        model.inner.q_head.bias.zero_()
        # q_halt - q_continue = 10 * z_H[:, 0, 0] (RMS-normalised): sign set by the input
        model.inner.q_head.weight[0, 0] = 10.0
    return model


def test_act_halts_per_sample_and_resets_carry():
    model = _halting_model()
    runner = ACTRunner(model)
    x = torch.randn(2, 8, 32)
    # pick inputs so that sample 0 halts after its first segment and sample 1 does not
    for _ in range(200):
        x = torch.randn(2, 8, 32)
        runner.reset()
        out = runner({'embeddings': x})
        if out['steps'].tolist() == [1, 5]:
            break
    assert out['steps'].tolist() == [1, 5] and out['halted'].all()
    assert out['segments'] == 5
    # carry reset on halt: a new call restarts every halted sample from the initial state,
    # i.e. gives the same answer as a fresh runner
    again = runner({'embeddings': x})
    runner2 = ACTRunner(model)
    fresh = runner2({'embeddings': x})
    assert torch.allclose(again['z_H'], fresh['z_H'], atol=1e-6)
    # without reset the carry persists and the state moves on
    runner3 = ACTRunner(model, reset_on_halt=False)
    first = runner3({'embeddings': x}, max_segments=1)
    second = runner3({'embeddings': x}, max_segments=1)
    assert second['steps'].tolist() == [2, 2]
    assert not torch.allclose(first['z_H'][1], second['z_H'][1])


def test_act_matches_reference_wrapper_per_segment():
    """With q-halting off, the runner's answer equals the reference ACT wrapper's."""
    torch.manual_seed(1)
    model = HRM(_cfg()).eval()
    b = {'inputs': torch.randint(0, 6, (3, 8))}
    carry = model.initial_carry(b)
    for _ in range(3):
        carry, ref = model(carry, b)
    out = ACTRunner(model, use_q_halt=False, max_steps=3)(b)
    assert torch.allclose(out['logits'], ref['logits'], atol=1e-5)


def test_act_respects_time_budget():
    model = HRM(_cfg(vocab_size=0, halt_max_steps=10_000)).eval()
    runner = ACTRunner(model, use_q_halt=False)
    x = {'embeddings': torch.randn(8, 8, 32)}
    runner(x, max_segments=3)                    # warm up the segment-time estimate
    seg = runner.clock.estimate_s
    budget = 10 * seg
    out = runner(x, budget_s=budget)
    assert 1 <= out['segments'] < 10_000
    # stops before overrunning; the margin absorbs segment-time jitter on a loaded machine
    assert out['elapsed_s'] <= budget + max(3 * seg, 0.5 * budget)
    assert not out['halted'].any()               # unfinished: the next call keeps thinking
    steps = out['steps'].clone()
    out2 = runner(x, max_segments=1)
    assert (out2['steps'] == steps + 1).all()
    # a budget smaller than one segment still returns an answer (one segment)
    assert runner(x, budget_s=0.0)['segments'] == 1


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs CUDA'))])
def test_checkpoint_resume_gives_same_next_loss(tmp_path, device):
    from sage_hrm import sudoku as S
    d = S.make_dataset(3, 64, 0, box=2, max_guesses=0, max_blanks=8)
    xi, yi = S.to_tokens(d['train'][0]), S.to_tokens(d['train'][1])
    mc = _cfg(seq_len=16, puzzle_emb_ndim=32, num_puzzle_identifiers=64,
              halt_exploration_prob=0.5)
    tc = TrainConfig(batch_size=16, steps=20, lr=1e-3, lr_warmup_steps=2, log_every=100)
    ids = np.arange(64)
    a = Trainer(mc, tc, xi, yi, ids, device=device)
    with torch.no_grad():   # the Q head says halt: only exploration (the RNG) keeps thinking
        a.model.inner.q_head.bias.copy_(torch.tensor([5.0, -5.0]))
    for _ in range(5):
        a.train_step()
    path = os.path.join(tmp_path, 'ck.pt')
    a.save(path)
    expect = [a.train_step()['loss'] for _ in range(3)]
    torch.manual_seed(123)              # the RNG state a fresh process would have
    if device == 'cuda':
        torch.cuda.manual_seed_all(123)
    b = Trainer(mc, TrainConfig(**{**tc.__dict__, 'seed': 99}), xi, yi, ids, device=device)
    b.load(path)
    got = [b.train_step()['loss'] for _ in range(3)]
    # on a GPU the backward's reductions may differ in the last bits between two runs
    assert got == (expect if device == 'cpu' else pytest.approx(expect, rel=1e-5))
    assert isinstance(b.carry.inner, InnerCarry)


def test_paper_config_size():
    model = HRM(HRMConfig.sudoku_paper(forward_dtype='float32'))
    dense = sum(p.numel() for n, p in model.named_parameters() if 'puzzle_emb' not in n)
    assert abs(dense / 1e6 - 27.3) < 0.3


def _assert_trunc_normal(name, t, std):
    """``t`` looks drawn from the reference's truncated normal with this std.

    JAX's definition (sapientinc/HRM models/common.py): a normal cut at +-2 of its own
    sigma, sigma chosen so that the truncated values have exactly ``std``.
    """
    x = t.detach().double().flatten().sort().values
    n, mass = x.numel(), math.erf(2 / math.sqrt(2))
    sigma = std / math.sqrt(1 - 4 * math.exp(-2) / math.sqrt(2 * math.pi) / mass)
    assert x.abs().max() <= 2 * sigma * (1 + 1e-6), name
    assert abs(x.mean()) < 4 * std / math.sqrt(n), name
    assert abs(x.std() / std - 1) < 4 / math.sqrt(n), name
    cdf = (torch.special.ndtr(x / sigma) - torch.special.ndtr(torch.tensor(-2.0))) / mass
    ks = (cdf - torch.arange(1, n + 1, dtype=torch.float64) / n).abs().max()
    assert ks < 3 / math.sqrt(n), (name, ks.item())     # Kolmogorov-Smirnov distance


@pytest.mark.parametrize('kw', [
    dict(puzzle_emb_ndim=0),                            # the accuracy study's model
    dict(hidden_size=128, num_heads=4, H_layers=2, L_layers=2, puzzle_emb_ndim=128,
         num_puzzle_identifiers=8, pos_encodings='learned')])
def test_init_matches_reference_distributions(kw):
    """Every parameter and buffer is initialised as in hrm_act_v1 (checked against formulas)."""
    torch.manual_seed(0)
    cfg = HRMConfig.sudoku_paper(forward_dtype='float32', **kw)
    inner, h = HRM(cfg).inner, cfg.hidden_size
    seen = set()
    for name, p in [*inner.named_parameters(), *inner.named_buffers()]:
        seen.add(name)
        if name.startswith('rotary_emb.'):
            continue
        elif name == 'q_head.weight':                  # Q starts at "continue": zero weight,
            assert not p.any(), name
        elif name == 'q_head.bias':                    # bias -5
            assert (p == -5).all(), name
        elif name in ('H_init', 'L_init'):             # fixed buffers, std 1
            assert name in dict(inner.named_buffers()) and p.shape == (h,)
            _assert_trunc_normal(name, p, 1.0)
        elif name in ('embed_tokens', 'embed_pos'):    # std 1/sqrt(hidden), scaled by sqrt(hidden)
            _assert_trunc_normal(name, p, h ** -0.5)
        elif name == 'puzzle_emb.weight':              # zero
            assert not p.any(), name
        elif name.endswith('.weight'):                 # CastedLinear: LeCun, std 1/sqrt(fan_in)
            assert p.ndim == 2 and name.rsplit('.', 2)[-2] in (
                'lm_head', 'qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj'), name
            _assert_trunc_normal(name, p, p.shape[1] ** -0.5)
        else:
            raise AssertionError(f'no init rule for {name}')   # e.g. a bias or a norm scale
    assert {'H_init', 'L_init', 'embed_tokens', 'lm_head.weight', 'q_head.bias'} <= seen
    assert not any('norm' in n or n.endswith('proj.bias') for n in seen)  # RMSNorm: no weights
    ids = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
    x = inner.embed(ids, torch.zeros(2, dtype=torch.long))[:, inner.puzzle_emb_len:]
    tok = inner.embed_tokens[ids]
    if cfg.pos_encodings == 'learned':
        tok = 0.707106781 * (tok + inner.embed_pos[inner.puzzle_emb_len:])
    assert torch.allclose(x, math.sqrt(h) * tok)
