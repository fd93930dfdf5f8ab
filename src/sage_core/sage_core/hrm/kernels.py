"""Fused HRM block operations: Triton kernels on CUDA, the same arithmetic in torch elsewhere.

A post-norm block ``x1 = norm(x + attn(x)); out = norm(x1 + mlp(x1))`` is run as four
GEMM kernels with fused prologues/epilogues plus attention (SDPA), instead of about nine
kernels. The RMSNorm after each residual add is *deferred*: a kernel stores the
un-normalised sum ``s`` and the next GEMM, whose K loop covers the whole row, accumulates
``sum(s^2)`` while it streams the row and scales its accumulator by
``r = rsqrt(mean(s^2) + eps)`` (row scaling commutes with the product:
``norm(s) @ W = r * (s @ W)``). So no kernel needs a whole output row and every GEMM
keeps its full grid over N, which matters at batch 1, where the weights must be streamed
by many multiprocessors at once.

- ``qkv_rope``: ``[q|k|v] = norm?(a) @ Wqkv^T`` with RoPE applied to q and k in the
  epilogue (each program computes both halves of its heads' dimensions, so the rotation
  is local). Returns the rows' ``r`` too (the residual needs it).
- ``linear_residual``: ``out = res * r_res + a @ W^T`` (o_proj and down_proj).
- ``gate_up_swiglu``: ``h = silu(r * a @ Wg^T) * (r * a @ Wu^T)``, ``r`` from ``a``.
- ``combine``: ``out1 = norm(a)``, ``out2 = out1 + b + c`` (module boundaries: the carry
  and the next module's input with its injection).

Every function takes ``backend='triton'`` (CUDA tensors, Triton installed) or ``'torch'``
(any device: float32 arithmetic, the kernels' reference). Accumulation is float32 in both;
outputs take the input dtype. Triton is optional: CPU installs never import it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

try:  # Triton ships with CUDA builds of torch; CPU installs run the torch path only
    import triton
    import triton.language as tl
    HAVE_TRITON = True
except Exception:  # pragma: no cover - depends on the install
    triton = tl = None
    HAVE_TRITON = False


def triton_ok(*tensors: torch.Tensor) -> bool:
    """Return True when the Triton kernels can run on these tensors."""
    import os
    interp = os.environ.get('TRITON_INTERPRET') == '1'
    return HAVE_TRITON and all(t.is_cuda or interp for t in tensors)


# ----------------------------------------------------------------------------- torch path

def _rownorm(x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.rsqrt(x.float().square().mean(-1) + eps)


def qkv_rope_torch(a, w, cos, sin, seq, num_heads, eps, norm_a, rope=True):
    """Compute :func:`qkv_rope` in torch (float32 arithmetic; the kernels' reference)."""
    m, hidden3 = a.shape[0], w.shape[0]
    hidden = hidden3 // 3
    d = hidden // num_heads
    r = _rownorm(a, eps) if norm_a else None
    acc = a.float() @ w.float().t()
    if r is not None:
        acc = acc * r[:, None]
    if rope:
        t = torch.arange(m, device=a.device) % seq
        c, s = cos.float()[t][:, None, :], sin.float()[t][:, None, :]
        qk = acc[:, :2 * hidden].view(m, 2 * num_heads, d)
        rot = torch.cat((-qk[..., d // 2:], qk[..., :d // 2]), -1)
        acc = torch.cat(((qk * c + rot * s).reshape(m, 2 * hidden), acc[:, 2 * hidden:]), 1)
    return acc.to(a.dtype), r


def linear_residual_torch(a, w, res, r_res):
    """Compute :func:`linear_residual` in torch."""
    acc = a.float() @ w.float().t()
    base = res.float() if r_res is None else res.float() * r_res[:, None]
    return (acc + base).to(a.dtype)


def gate_up_swiglu_torch(a, w, eps):
    """Compute :func:`gate_up_swiglu` in torch."""
    inter = w.shape[0] // 2
    r = _rownorm(a, eps)
    acc = (a.float() @ w.float().t()) * r[:, None]
    g, u = acc[:, :inter], acc[:, inter:]
    return (F.silu(g) * u).to(a.dtype), r


def combine_torch(a, eps, norm_a=True, b=None, c=None, want_out1=True):
    """Compute :func:`combine` in torch."""
    x = a.float()
    if norm_a:
        x = x * _rownorm(a, eps)[:, None]
    out1 = x.to(a.dtype) if want_out1 else None
    y = x
    if b is not None:
        y = y + b.float()
    if c is not None:
        y = y + c.float()
    return out1, y.to(a.dtype)


# ----------------------------------------------------------------------------- Triton path

def _cfgs(pairs):
    return [triton.Config({'BM': bm, 'BN': bn, 'BK': bk}, num_warps=w, num_stages=s)
            for bm, bn, bk, w, s in pairs]


# (BM, BN, BK, warps, stages): small-M tiles spread the weights over many SMs (batch 1),
# large tiles for throughput (batch 768).
_GEMM_CONFIGS = [(16, 32, 128, 4, 3), (32, 64, 64, 4, 4), (64, 64, 64, 4, 4),
                 (64, 128, 64, 4, 4), (128, 128, 64, 8, 3), (128, 256, 64, 8, 3),
                 (128, 64, 64, 4, 4)]
_DUAL_CONFIGS = [(16, 32, 128, 4, 3), (32, 64, 64, 4, 4), (64, 64, 64, 4, 4),
                 (64, 128, 64, 8, 4), (128, 128, 64, 8, 3), (128, 64, 64, 4, 4)]
# qkv_rope: BN is set by the heads per program (HP); BM/BK/warps/stages tuned
_QKV_CONFIGS = [(16, 2, 128, 4, 3), (32, 2, 64, 4, 4), (64, 2, 64, 4, 4), (128, 2, 64, 8, 3),
                (64, 4, 64, 8, 4), (128, 4, 64, 8, 3)]


if HAVE_TRITON:
    @triton.jit
    def _qkv_rope_kernel(a_ptr, w_ptr, out_ptr, cos_ptr, sin_ptr, r_ptr, M, K, SEQ, eps,
                         stride_am, stride_wn, stride_om,
                         HIDDEN: tl.constexpr, HEAD_DIM: tl.constexpr, HP: tl.constexpr,
                         NORM_A: tl.constexpr, ROPE: tl.constexpr,
                         BM: tl.constexpr, BK: tl.constexpr):
        HALF: tl.constexpr = HEAD_DIM // 2
        BN: tl.constexpr = HP * HALF
        GROUPS: tl.constexpr = HIDDEN // (HP * HEAD_DIM)
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        sec = pid_n // GROUPS                      # 0 q, 1 k, 2 v
        g = pid_n % GROUPS
        rm = pid_m * BM + tl.arange(0, BM)
        j = tl.arange(0, BN)
        dim = j % HALF
        col_a = sec * HIDDEN + (g * HP + j // HALF) * HEAD_DIM + dim   # first halves
        col_b = col_a + HALF                                              # second halves
        rk = tl.arange(0, BK)
        mask_m = rm < M
        a_ptrs = a_ptr + rm[:, None] * stride_am + rk[None, :]
        wa_ptrs = w_ptr + col_a[None, :] * stride_wn + rk[:, None]
        wb_ptrs = w_ptr + col_b[None, :] * stride_wn + rk[:, None]
        acc_a = tl.zeros((BM, BN), dtype=tl.float32)
        acc_b = tl.zeros((BM, BN), dtype=tl.float32)
        ss = tl.zeros((BM,), dtype=tl.float32)
        for _ in range(0, K, BK):
            a = tl.load(a_ptrs, mask=mask_m[:, None], other=0.0)
            if NORM_A:
                af = a.to(tl.float32)
                ss += tl.sum(af * af, axis=1)
            acc_a = tl.dot(a, tl.load(wa_ptrs), acc_a)
            acc_b = tl.dot(a, tl.load(wb_ptrs), acc_b)
            a_ptrs += BK
            wa_ptrs += BK
            wb_ptrs += BK
        if NORM_A:
            r = tl.rsqrt(ss / K + eps)
            acc_a = acc_a * r[:, None]
            acc_b = acc_b * r[:, None]
            if pid_n == 0:
                tl.store(r_ptr + rm, r, mask=mask_m)
        if ROPE:
            if sec < 2:
                t = rm % SEQ
                tab = t[:, None] * HEAD_DIM + dim[None, :]
                cos_a = tl.load(cos_ptr + tab, mask=mask_m[:, None], other=0.0)
                sin_a = tl.load(sin_ptr + tab, mask=mask_m[:, None], other=0.0)
                cos_b = tl.load(cos_ptr + tab + HALF, mask=mask_m[:, None], other=0.0)
                sin_b = tl.load(sin_ptr + tab + HALF, mask=mask_m[:, None], other=0.0)
                new_a = acc_a * cos_a - acc_b * sin_a
                acc_b = acc_b * cos_b + acc_a * sin_b
                acc_a = new_a
        o = out_ptr + rm[:, None] * stride_om
        dt = out_ptr.dtype.element_ty
        tl.store(o + col_a[None, :], acc_a.to(dt), mask=mask_m[:, None])
        tl.store(o + col_b[None, :], acc_b.to(dt), mask=mask_m[:, None])

    @triton.jit
    def _linear_residual_kernel(a_ptr, w_ptr, res_ptr, rres_ptr, out_ptr, M, N, K,
                                stride_am, stride_wn, stride_rm, stride_om,
                                RES_SCALE: tl.constexpr,
                                BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rm = pid_m * BM + tl.arange(0, BM)
        rn = pid_n * BN + tl.arange(0, BN)
        rk = tl.arange(0, BK)
        mask_m = rm < M
        mask_n = rn < N
        a_ptrs = a_ptr + rm[:, None] * stride_am + rk[None, :]
        w_ptrs = w_ptr + rn[None, :] * stride_wn + rk[:, None]
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for _ in range(0, K, BK):
            a = tl.load(a_ptrs, mask=mask_m[:, None], other=0.0)
            acc = tl.dot(a, tl.load(w_ptrs, mask=mask_n[None, :], other=0.0), acc)
            a_ptrs += BK
            w_ptrs += BK
        mask = mask_m[:, None] & mask_n[None, :]
        res = tl.load(res_ptr + rm[:, None] * stride_rm + rn[None, :], mask=mask,
                      other=0.0).to(tl.float32)
        if RES_SCALE:
            res = res * tl.load(rres_ptr + rm, mask=mask_m, other=0.0)[:, None]
        out = acc + res
        tl.store(out_ptr + rm[:, None] * stride_om + rn[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _gate_up_swiglu_kernel(a_ptr, w_ptr, out_ptr, r_ptr, M, INTER, K, eps,
                               stride_am, stride_wn, stride_om,
                               BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rm = pid_m * BM + tl.arange(0, BM)
        rn = pid_n * BN + tl.arange(0, BN)
        rk = tl.arange(0, BK)
        mask_m = rm < M
        mask_n = rn < INTER
        a_ptrs = a_ptr + rm[:, None] * stride_am + rk[None, :]
        wg_ptrs = w_ptr + rn[None, :] * stride_wn + rk[:, None]
        wu_ptrs = wg_ptrs + INTER * stride_wn
        acc_g = tl.zeros((BM, BN), dtype=tl.float32)
        acc_u = tl.zeros((BM, BN), dtype=tl.float32)
        ss = tl.zeros((BM,), dtype=tl.float32)
        for _ in range(0, K, BK):
            a = tl.load(a_ptrs, mask=mask_m[:, None], other=0.0)
            af = a.to(tl.float32)
            ss += tl.sum(af * af, axis=1)
            acc_g = tl.dot(a, tl.load(wg_ptrs, mask=mask_n[None, :], other=0.0), acc_g)
            acc_u = tl.dot(a, tl.load(wu_ptrs, mask=mask_n[None, :], other=0.0), acc_u)
            a_ptrs += BK
            wg_ptrs += BK
            wu_ptrs += BK
        r = tl.rsqrt(ss / K + eps)
        gate = acc_g * r[:, None]
        up = acc_u * r[:, None]
        h = gate * tl.sigmoid(gate) * up
        if pid_n == 0:
            tl.store(r_ptr + rm, r, mask=mask_m)
        tl.store(out_ptr + rm[:, None] * stride_om + rn[None, :],
                 h.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])

    @triton.jit
    def _combine_kernel(a_ptr, b_ptr, c_ptr, out1_ptr, out2_ptr, M, N, eps,
                        NORM_A: tl.constexpr, HAS_B: tl.constexpr, HAS_C: tl.constexpr,
                        OUT1: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
        rm = tl.program_id(0) * BM + tl.arange(0, BM)
        rn = tl.arange(0, BN)
        mask = (rm < M)[:, None] & (rn < N)[None, :]
        off = rm[:, None] * N + rn[None, :]
        x = tl.load(a_ptr + off, mask=mask, other=0.0).to(tl.float32)
        if NORM_A:
            x = x * tl.rsqrt(tl.sum(x * x, axis=1) / N + eps)[:, None]
        dt = out2_ptr.dtype.element_ty
        if OUT1:
            tl.store(out1_ptr + off, x.to(dt), mask=mask)
        if HAS_B:
            x += tl.load(b_ptr + off, mask=mask, other=0.0).to(tl.float32)
        if HAS_C:
            x += tl.load(c_ptr + off, mask=mask, other=0.0).to(tl.float32)
        tl.store(out2_ptr + off, x.to(dt), mask=mask)

    def _prune(configs, nargs, **kw):
        """Drop configs whose BK does not divide K or whose heads per program don't fit."""
        args = {**nargs, **kw}
        k = args['K']
        keep = []
        for c in configs:
            m = c.kwargs
            if k % m['BK']:
                continue
            if 'HP' in m:
                d = args['HEAD_DIM']
                if not _heads_per_program_ok(args['HIDDEN'] // d, d, m['HP']):
                    continue
            keep.append(c)
        return keep or configs[:1]

    _qkv_tuned = triton.autotune(
        [triton.Config({'BM': bm, 'HP': hp, 'BK': bk}, num_warps=w, num_stages=s)
         for bm, hp, bk, w, s in _QKV_CONFIGS],
        key=['M', 'K', 'HIDDEN', 'HEAD_DIM', 'NORM_A'],
        prune_configs_by={'early_config_prune': _prune})(_qkv_rope_kernel)
    _linres_tuned = triton.autotune(_cfgs(_GEMM_CONFIGS), key=['M', 'N', 'K', 'RES_SCALE'],
                                    prune_configs_by={'early_config_prune': _prune}
                                    )(_linear_residual_kernel)
    _swiglu_tuned = triton.autotune(_cfgs(_DUAL_CONFIGS), key=['M', 'INTER', 'K'],
                                    prune_configs_by={'early_config_prune': _prune}
                                    )(_gate_up_swiglu_kernel)


def _meta(config, names):
    return {} if config is None else {k: config[k] for k in names if k in config}


def _launch(tuned, raw, grid_fn, args, kwargs, config):
    """Launch ``tuned`` (autotuned), or ``raw`` with an explicit ``config`` dict."""
    if config is None:
        tuned[grid_fn](*args, **kwargs)
    else:
        cfg = dict(config)
        w, s = cfg.pop('num_warps', 4), cfg.pop('num_stages', 2)
        raw[grid_fn](*args, **kwargs, **cfg, num_warps=w, num_stages=s)


def _heads_per_program_ok(num_heads: int, head_dim: int, hp: int) -> bool:
    half = head_dim // 2
    bn = hp * half
    return num_heads % hp == 0 and bn >= 16 and bn & (bn - 1) == 0


def triton_shapes_ok(hidden: int, num_heads: int, inter: int) -> bool:
    """Return True when the Triton kernels support these sizes (else use backend='torch')."""
    d = hidden // num_heads
    return (hidden % 64 == 0 and inter % 64 == 0 and d % 2 == 0
            and any(_heads_per_program_ok(num_heads, d, hp) for _, hp, *_ in _QKV_CONFIGS))


def qkv_rope(a, w, cos, sin, seq: int, num_heads: int, eps: float, norm_a: bool,
             rope: bool = True, backend: str = 'triton', config: dict | None = None):
    """Return ``(qkv [M, 3*hidden], r [M] or None)``: ``norm?(a) @ w^T``, RoPE on q and k.

    ``a`` [M, hidden] (rows are ``seq`` positions of consecutive samples), ``w``
    [3*hidden, hidden], ``cos``/``sin`` [seq, head_dim] float32.
    """
    if backend == 'torch':
        return qkv_rope_torch(a, w, cos, sin, seq, num_heads, eps, norm_a,
                              rope and cos is not None)
    m, k = a.shape
    hidden = w.shape[0] // 3
    d = hidden // num_heads
    if cos is None:  # no RoPE: the table pointers are never read
        cos = sin = a
        rope = False
    out = torch.empty(m, 3 * hidden, device=a.device, dtype=a.dtype)
    r = torch.empty(m, device=a.device, dtype=torch.float32)

    def grid(meta):
        return (triton.cdiv(m, meta['BM']), 3 * hidden // (meta['HP'] * d))

    _launch(_qkv_tuned, _qkv_rope_kernel, grid,
            (a, w, out, cos, sin, r, m, k, seq, eps, a.stride(0), w.stride(0), out.stride(0)),
            dict(HIDDEN=hidden, HEAD_DIM=d, NORM_A=norm_a, ROPE=rope), config)
    return out, (r if norm_a else None)


def linear_residual(a, w, res, r_res=None, backend: str = 'triton',
                    config: dict | None = None):
    """Return ``res * r_res[:, None] + a @ w^T`` (``r_res`` None: no scaling)."""
    if backend == 'torch':
        return linear_residual_torch(a, w, res, r_res)
    m, k = a.shape
    n = w.shape[0]
    out = torch.empty(m, n, device=a.device, dtype=a.dtype)

    def grid(meta):
        return (triton.cdiv(m, meta['BM']), triton.cdiv(n, meta['BN']))

    _launch(_linres_tuned, _linear_residual_kernel, grid,
            (a, w, res, r_res if r_res is not None else res, out, m, n, k,
             a.stride(0), w.stride(0), res.stride(0), out.stride(0)),
            dict(RES_SCALE=r_res is not None), config)
    return out


def gate_up_swiglu(a, w, eps: float, backend: str = 'triton', config: dict | None = None):
    """Return ``(silu(norm(a) @ Wg^T) * (norm(a) @ Wu^T), r)``; ``w`` = [Wg; Wu]."""
    if backend == 'torch':
        return gate_up_swiglu_torch(a, w, eps)
    m, k = a.shape
    inter = w.shape[0] // 2
    out = torch.empty(m, inter, device=a.device, dtype=a.dtype)
    r = torch.empty(m, device=a.device, dtype=torch.float32)

    def grid(meta):
        return (triton.cdiv(m, meta['BM']), triton.cdiv(inter, meta['BN']))

    _launch(_swiglu_tuned, _gate_up_swiglu_kernel, grid,
            (a, w, out, r, m, inter, k, eps, a.stride(0), w.stride(0), out.stride(0)),
            {}, config)
    return out, r


def combine(a, eps: float, norm_a: bool = True, b=None, c=None, want_out1: bool = True,
            backend: str = 'triton'):
    """Return ``(out1, out2)``: ``out1 = norm(a)`` (or ``a``), ``out2 = out1 + b + c``."""
    if backend == 'torch':
        return combine_torch(a, eps, norm_a, b, c, want_out1)
    m, n = a.shape
    for t in (a, b, c):
        assert t is None or t.is_contiguous()
    out1 = torch.empty_like(a) if want_out1 else None
    out2 = torch.empty_like(a)
    bn = 1 << (n - 1).bit_length()
    bm = max(1, min(16, 4096 // bn))
    _combine_kernel[(triton.cdiv(m, bm),)](
        a, b if b is not None else a, c if c is not None else a,
        out1 if out1 is not None else out2, out2, m, n, eps,
        NORM_A=norm_a, HAS_B=b is not None, HAS_C=c is not None, OUT1=want_out1,
        BM=bm, BN=bn, num_warps=4 if bn <= 1024 else 8)
    return out1, out2


# ----------------------------------------------------------------------------- a block

CONTIGUOUS_QKV = True


def attention(qkv: torch.Tensor, batch: int, seq: int, num_heads: int,
              contiguous: bool | None = None) -> torch.Tensor:
    """Non-causal SDPA over the fused qkv rows; returns [M, hidden] (rows as the input).

    ``contiguous`` (default :data:`CONTIGUOUS_QKV`): give SDPA contiguous q/k/v copies
    rather than strided views of the packed buffer (the fused path gave wrong results on
    an H200 with the views; see bench/hrm_gpu.py's kernel diagnosis).
    """
    hidden = qkv.shape[1] // 3
    d = hidden // num_heads
    q, k, v = (qkv[:, i * hidden:(i + 1) * hidden].view(batch, seq, num_heads, d)
               .transpose(1, 2) for i in range(3))
    if CONTIGUOUS_QKV if contiguous is None else contiguous:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = F.scaled_dot_product_attention(q, k, v, is_causal=False)
    return out.transpose(1, 2).reshape(batch * seq, hidden)


def block(x, x_norm: bool, w: dict, cos, sin, batch: int, seq: int, num_heads: int,
          eps: float, backend: str = 'triton'):
    """One post-norm block on rows ``x`` [M, hidden]; returns the un-normalised ``s2``.

    ``x_norm``: the block's input is ``norm(x)`` (``x`` is the previous block's ``s2``).
    The block's output is ``norm(s2)``; the caller normalises at module boundaries
    (:func:`combine`) and the next block does it on the fly.
    ``w``: ``qkv`` [3h, h], ``o`` [h, h], ``gate_up`` [2I, h], ``down`` [h, I].
    """
    qkv, r0 = qkv_rope(x, w['qkv'], cos, sin, seq, num_heads, eps, x_norm, cos is not None,
                       backend=backend)
    att = attention(qkv, batch, seq, num_heads)
    s1 = linear_residual(att, w['o'], x, r0, backend=backend)
    h, r1 = gate_up_swiglu(s1, w['gate_up'], eps, backend=backend)
    return linear_residual(h, w['down'], s1, r1, backend=backend)


def flops_per_token_block(hidden: int, inter: int, seq: int) -> float:
    """Matrix FLOPs of one block per token (GEMMs and attention)."""
    return 2 * hidden * (3 * hidden + hidden + 2 * inter) + 2 * inter * hidden + 4 * seq * hidden


__all__ = ['HAVE_TRITON', 'triton_ok', 'triton_shapes_ok', 'qkv_rope', 'linear_residual',
           'gate_up_swiglu', 'combine', 'attention', 'block', 'flops_per_token_block',
           'math']
