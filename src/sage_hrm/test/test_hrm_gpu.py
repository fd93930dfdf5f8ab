"""HRM GPU runner (sage_hrm.gpu).

On CPU: the runner gives the model's own segment-loop outputs, fixed segments and ACT
halting. On CUDA: graph replay matches the runner without graphs and float32.
"""

import copy

import pytest
import torch

from sage_hrm.gpu import GraphRunner
from sage_hrm.model import HRM, HRMConfig

torch.set_num_threads(2)
HAVE_CUDA = torch.cuda.is_available()


def _model(pos='rope', puzzle=True, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = HRMConfig.tiny(**{**dict(seq_len=9, vocab_size=7, hidden_size=64, num_heads=2,
                                   halt_max_steps=5, pos_encodings=pos,
                                   puzzle_emb_ndim=64 if puzzle else 0), **kw})
    m = HRM(cfg).eval()
    with torch.no_grad():  # exercise the puzzle embedding and a Q head that halts early
        if puzzle:
            m.inner.puzzle_emb.weight.normal_()
        m.inner.q_head.weight.normal_(0, 0.5)
        m.inner.q_head.bias.zero_()
    return m


def _loop(m, ids, pid, segments):
    """The model's own segment loop: per-segment logits and Q logits."""
    inner = m.inner
    out = []
    with torch.no_grad():
        x = inner.embed(ids, pid if m.config.puzzle_emb_ndim else None)
        c = inner.reset_carry(torch.ones(len(ids), dtype=torch.bool),
                              inner.empty_carry(len(ids), x.shape[1]))
        for _ in range(segments):
            c, z, (qh, qc) = inner(c, x)
            out.append((inner.lm_head(z)[:, inner.puzzle_emb_len:], qh, qc))
    return out


@pytest.mark.parametrize('pos,puzzle', [('rope', True), ('learned', False), ('none', True)])
def test_fixed_segments_match_model_loop(pos, puzzle):
    m = _model(pos, puzzle)
    ids = torch.randint(0, 7, (3, 9))
    pid = torch.zeros(3, dtype=torch.long)
    want, qh, qc = _loop(m, ids, pid, 5)[-1]
    r = GraphRunner(m, 3, device='cpu')
    assert r.backend == 'eager' and not r.graph             # 'auto' off CUDA
    out = r(ids, pid)
    assert torch.equal(out['logits'], want)
    assert torch.equal(out['q_halt_logits'], qh) and torch.equal(out['q_continue_logits'], qc)
    assert out['segments'] == 5 and bool(out['halted'].all())
    # the model's weights are untouched (the runner keeps its own copy)
    assert m.inner.H_level.layers[0].mlp.down_proj.weight.dtype == torch.float32


@pytest.mark.parametrize('chunk', [1, 2])
def test_act_halting_matches_per_sample_reference(chunk):
    m = _model()
    ids = torch.randint(0, 7, (16, 9))
    pid = torch.zeros(16, dtype=torch.long)
    seg = _loop(m, ids, pid, 5)
    # reference: a sample halts at the first segment with q_halt > q_continue, or the last
    want_steps = torch.full((16,), 5)
    for k in range(4, -1, -1):
        halt = seg[k][1] > seg[k][2]
        want_steps = torch.where(halt, k + 1, want_steps)
    want = torch.stack([seg[int(s) - 1][0][i] for i, s in enumerate(want_steps)])
    r = GraphRunner(m, 16, backend='eager', halting=True, chunk=chunk, device='cpu')
    out = r(ids, pid)
    assert torch.equal(out['steps'].long(), want_steps)
    assert torch.equal(out['logits'], want)
    assert bool(out['halted'].all())
    assert len(set(want_steps.tolist())) > 1, 'the test needs samples halting at different steps'
    # the batch stops after the chunk in which its slowest sample halted
    assert out['segments'] == -(-int(want_steps.max()) // chunk) * chunk
    # a second call starts from scratch
    out2 = r(ids, pid)
    assert torch.equal(out2['steps'].long(), want_steps)


def test_embedding_input_model():
    torch.manual_seed(0)
    m = HRM(HRMConfig.tiny(seq_len=6, vocab_size=0, hidden_size=64, num_heads=2,
                           halt_max_steps=3)).eval()
    emb = torch.randn(2, 6, 64)
    with torch.no_grad():
        inner = m.inner
        x = inner.scale_positions(emb)
        c = inner.reset_carry(torch.ones(2, dtype=torch.bool), inner.empty_carry(2, 6))
        for _ in range(3):
            c, z, _ = inner(c, x)
    out = GraphRunner(m, 2, backend='eager', device='cpu')(emb)
    assert 'logits' not in out
    assert torch.equal(out['z_H'], z)


def test_unknown_backend_is_an_error():
    with pytest.raises(ValueError, match='backend'):
        GraphRunner(_model(), 1, backend='tensorrt', device='cpu')


CUDA_BACKENDS = ['eager', 'inductor']


@pytest.mark.skipif(not HAVE_CUDA, reason='needs CUDA (CUDA graphs)')
@pytest.mark.parametrize('backend', CUDA_BACKENDS)
def test_cuda_graph_one_segment_matches_no_graph_and_float32(backend):
    # one segment: an untrained recurrent net amplifies bf16 rounding over many segments
    m = _model(hidden_size=128, num_heads=2).cuda()
    ids = torch.randint(0, 7, (4, 9), device='cuda')
    pid = torch.zeros(4, dtype=torch.long, device='cuda')
    a = GraphRunner(m, 4, backend=backend, segments=1, graph=True)
    b = GraphRunner(m, 4, backend=backend, segments=1, graph=False)
    assert a.backend == backend
    oa, ob = a(ids, pid), b(ids, pid)

    def rel(x, y):
        return float((x.float().cpu() - y.float().cpu()).norm() / y.float().cpu().norm())

    assert rel(oa['logits'], ob['logits']) < 2e-2
    want = _loop(copy.deepcopy(m).cpu(), ids.cpu(), pid.cpu(), 1)[-1][0]
    assert rel(oa['logits'], want) < 5e-2                      # bf16 against float32
    ids2 = torch.randint(0, 7, (4, 9), device='cuda')          # the graph reads new inputs
    assert rel(a(ids2, pid)['logits'], b(ids2, pid)['logits']) < 2e-2


@pytest.mark.skipif(not HAVE_CUDA, reason='needs CUDA (CUDA graphs)')
@pytest.mark.parametrize('backend', CUDA_BACKENDS)
@pytest.mark.parametrize('bias,steps', [((1.0, -1.0), 1), ((-1.0, 1.0), 3)])
def test_cuda_act_graphs_stop_when_all_halted(backend, bias, steps):
    m = _model(hidden_size=128, num_heads=2, halt_max_steps=3)
    with torch.no_grad():       # halting decided by the bias alone: deterministic
        m.inner.q_head.weight.zero_()
        m.inner.q_head.bias.copy_(torch.tensor(bias))
    m = m.cuda()
    ids = torch.randint(0, 7, (4, 9), device='cuda')
    r = GraphRunner(m, 4, backend=backend, halting=True)
    out = r(ids)
    assert out['segments'] == steps
    assert out['steps'].tolist() == [steps] * 4 and bool(out['halted'].all())
    fixed = GraphRunner(m, 4, backend=backend, segments=steps)(ids)
    err = (out['logits'].float() - fixed['logits'].float()).norm() / fixed['logits'].float().norm()
    assert float(err) < 5e-2
