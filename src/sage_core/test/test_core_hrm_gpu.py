"""HRM GPU runner (sage_core.hrm.gpu) and fused kernels (sage_core.hrm.kernels).

On CPU: the runner's paths (eager, and the fused arithmetic in torch) give the model's own
segment-loop outputs, fixed segments and ACT halting; the Triton kernels match their torch
reference under Triton's interpreter when Triton is installed. On CUDA: graph replay
matches the runner without graphs.
"""

import copy
import os
import subprocess
import sys

import pytest
import torch

from sage_core.hrm import kernels as K
from sage_core.hrm.gpu import GraphRunner
from sage_core.hrm.model import HRM, HRMConfig

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
@pytest.mark.parametrize('backend', ['eager', 'fused'])
def test_fixed_segments_match_model_loop(pos, puzzle, backend):
    m = _model(pos, puzzle)
    ids = torch.randint(0, 7, (3, 9))
    pid = torch.zeros(3, dtype=torch.long)
    want, qh, qc = _loop(m, ids, pid, 5)[-1]
    r = GraphRunner(m, 3, backend=backend, device='cpu')
    assert r.backend == backend and not r.graph
    if backend == 'fused':
        assert r.kernel_backend == 'torch'   # no CUDA: the kernels' torch arithmetic
    out = r(ids, pid)
    tol = 0 if backend == 'eager' else 1e-3     # float32 rounding over 5 recurrent segments
    assert (out['logits'] - want).abs().max() <= tol
    assert (out['q_halt_logits'] - qh).abs().max() <= max(tol, 1e-6) * 10
    assert (out['q_continue_logits'] - qc).abs().max() <= max(tol, 1e-6) * 10
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
    r = GraphRunner(m, 16, backend='fused', halting=True, chunk=chunk, device='cpu')
    out = r(ids, pid)
    assert torch.equal(out['steps'].long(), want_steps)
    assert (out['logits'] - want).abs().max() < 1e-3
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
    out = GraphRunner(m, 2, backend='fused', device='cpu')(emb)
    assert 'logits' not in out
    assert (out['z_H'] - z).abs().max() < 1e-3


def test_unknown_backend_is_an_error():
    with pytest.raises(ValueError, match='backend'):
        GraphRunner(_model(), 1, backend='tensorrt', device='cpu')


_INTERP = r'''
import sys, torch
import triton.runtime.interpreter as I
_o = I._patch_lang_tensor
def _p(t, s):  # numpy>=2 refuses int() of a 1-element array; the interpreter does that
    _o(t, s)
    s.set_attr(t, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))
I._patch_lang_tensor = _p
from sage_core.hrm import kernels as K
torch.manual_seed(0)
B, T, H, D, inter = 3, 10, 4, 32, 256
h, M = H * D, B * T
bad = []
def check(name, a, b, tol):
    for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        if x is None and y is None:
            continue
        err = float((x.float() - y.float()).abs().max())
        if not err <= tol:
            bad.append((name, err))
for dt, tol in ((torch.float32, 1e-4), (torch.float16, 4e-3)):
    x = torch.randn(M, h).to(dt)
    pos = torch.arange(T).float()[:, None] / 10000 ** (torch.arange(0, D, 2).float() / D)
    emb = torch.cat((pos, pos), -1)
    cos, sin = emb.cos(), emb.sin()
    w = (torch.randn(3 * h, h) / h ** .5).to(dt)
    for norm in (False, True):
        for cfg in ({'BM': 16, 'HP': 2, 'BK': 64}, {'BM': 32, 'HP': 4, 'BK': 32}):
            check('qkv', K.qkv_rope(x, w, cos, sin, T, H, 1e-5, norm, config=cfg),
                  K.qkv_rope(x, w, cos, sin, T, H, 1e-5, norm, backend='torch'), tol)
    check('qkv_norope', K.qkv_rope(x, w, None, None, T, H, 1e-5, True,
                                   config={'BM': 16, 'HP': 2, 'BK': 64}),
          K.qkv_rope(x, w, None, None, T, H, 1e-5, True, backend='torch'), tol)
    wo = (torch.randn(h, h) / h ** .5).to(dt)
    r = torch.rand(M) + 0.5
    for rr in (None, r):
        check('linres', K.linear_residual(x, wo, x, rr, config={'BM': 16, 'BN': 32, 'BK': 32}),
              K.linear_residual(x, wo, x, rr, backend='torch'), tol)
    wgu = (torch.randn(2 * inter, h) / h ** .5).to(dt)
    check('swiglu', K.gate_up_swiglu(x, wgu, 1e-5, config={'BM': 16, 'BN': 64, 'BK': 64}),
          K.gate_up_swiglu(x, wgu, 1e-5, backend='torch'), tol)
    y, z = torch.randn(M, h).to(dt), torch.randn(M, h).to(dt)
    for kw in (dict(norm_a=True, b=y, c=z), dict(norm_a=False, b=y),
               dict(norm_a=True, want_out1=False)):
        check('combine', K.combine(x, 1e-5, **kw), K.combine(x, 1e-5, backend='torch', **kw),
              tol)
print('BAD', bad)
sys.exit(1 if bad else 0)
'''


def _have_triton():
    try:
        import triton  # noqa: F401
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _have_triton(), reason='Triton is not installed (CUDA builds of torch '
                                               'bring it); the kernels run on CUDA only')
def test_triton_kernels_match_torch_reference_in_interpreter():
    env = {**os.environ, 'TRITON_INTERPRET': '1'}
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env['PYTHONPATH'] = src + os.pathsep + env.get('PYTHONPATH', '')
    p = subprocess.run([sys.executable, '-c', _INTERP], env=env, capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]


def test_triton_shape_support():
    assert K.triton_shapes_ok(512, 8, 1536)        # the paper's Sudoku model
    assert not K.triton_shapes_ok(96, 2, 256)      # hidden not a multiple of 64


FUSED_XFAIL = pytest.mark.xfail(
    reason='known: on an H200 the Triton qkv_rope kernel with the deferred norm gave wrong '
           'results under some autotuned configs (bench/results/hrm_gpu_diag.json); the fused '
           'backend is experimental and opt-in', strict=False)
CUDA_BACKENDS = ['eager', 'inductor', pytest.param('fused', marks=FUSED_XFAIL)]


@pytest.mark.skipif(not HAVE_CUDA, reason='needs CUDA (CUDA graphs, Triton kernels)')
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
