"""Fixed-shape HRM inference for a GPU: weights cast once, fused kernels, CUDA graphs.

``GraphRunner`` solves a batch of a fixed size. It copies the model once in the forward
dtype (bf16 on CUDA; the model's own weights are left alone), keeps every tensor it uses
in static buffers, and on CUDA captures its work in CUDA graphs, so a call is an input
copy and graph replays with no host synchronisation inside.

Backends (``backend=``):

- ``'inductor'``: the model's own segment through ``torch.compile`` (``compile_mode``).
- ``'eager'``: the model's own segment as it is.
- ``'auto'``: ``'inductor'`` on CUDA (the fastest measured on an H200), else ``'eager'``.
- ``'fused'`` (experimental): each block as four fused GEMM kernels plus SDPA
  (``sage_core.hrm.kernels``: deferred RMSNorm, RoPE in the QKV epilogue, SwiGLU in the
  gate/up epilogue, residual adds in the o/down epilogues). Triton kernels on CUDA; on
  other devices (or without Triton) the same arithmetic in torch, which the CPU tests
  check. Measured on an H200 it was slower than ``'inductor'`` at every batch size (its
  Triton GEMMs reach about half of cuBLAS's rate) and, with strided q/k/v views into SDPA,
  wrong; see README.md, "HRM on a GPU".

Modes:

- fixed segments (``halting=False``, the reference's evaluation): ``segments`` segments
  (default ``halt_max_steps``) in one graph; the outputs are the last segment's.
- ACT halting (``halting=True``): a sample halts when ``q_halt > q_continue`` or after
  ``halt_max_steps`` segments and keeps the outputs of that segment. Segments run in
  graphs of ``chunk`` segments; after each chunk the host reads one flag ("all halted")
  and stops early, so a batch costs the segments its slowest sample needs.

Usage::

    runner = GraphRunner(model, batch_size=1, halting=True)      # on CUDA: inductor
    out = runner(ids)            # ids [1, 81] on the GPU
    out['logits'], out['steps'], out['halted'], out['segments']

The returned tensors are the runner's static buffers: the next call overwrites them
(clone what you keep).
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F

from sage_core.hrm import kernels as K
from sage_core.hrm.model import HRM, HRMInner, InnerCarry

BACKENDS = ('auto', 'fused', 'inductor', 'eager')


def cast_inner(inner: HRMInner, dtype: torch.dtype, device) -> HRMInner:
    """Return a copy of ``inner`` on ``device`` with weights and init states in ``dtype``.

    The RoPE tables stay float32 (as the reference).
    """
    new = copy.deepcopy(inner).to(device)
    for p in new.parameters():
        p.requires_grad_(False)
        if p.is_floating_point():
            p.data = p.data.to(dtype)
    new.H_init = new.H_init.to(dtype)
    new.L_init = new.L_init.to(dtype)
    new.dtype = dtype
    return new.eval()


class FusedSegment:
    """One HRM segment (H/L cycles) through :mod:`sage_core.hrm.kernels`.

    Called as ``seg(z_H, z_L, x) -> (z_H, z_L)`` on [B, T, hidden] tensors; the arithmetic
    is the model's (``HRMInner.forward`` without gradients), the normalisations deferred.
    """

    def __init__(self, inner: HRMInner, backend: str = 'triton'):
        cfg = inner.config
        self.cfg, self.backend = cfg, backend
        self.eps, self.heads = cfg.rms_norm_eps, cfg.num_heads

        def pack(module):
            out = []
            for b in module.layers:
                out.append({'qkv': b.self_attn.qkv_proj.weight.detach().contiguous(),
                            'o': b.self_attn.o_proj.weight.detach().contiguous(),
                            'gate_up': b.mlp.gate_up_proj.weight.detach().contiguous(),
                            'down': b.mlp.down_proj.weight.detach().contiguous()})
            return out

        self.H, self.L = pack(inner.H_level), pack(inner.L_level)
        if cfg.pos_encodings == 'rope':
            cos, sin = inner.rotary_emb()
            self.cos, self.sin = cos.float().contiguous(), sin.float().contiguous()
        else:
            self.cos = self.sin = None

    def _module(self, blocks, h, batch, seq):
        s, norm = h, False
        for w in blocks:
            s = K.block(s, norm, w, self.cos, self.sin, batch, seq, self.heads, self.eps,
                        backend=self.backend)
            norm = True
        return s                         # un-normalised output of the last block

    def __call__(self, z_H, z_L, x):
        """Run one segment; returns the new (z_H, z_L), [B, T, hidden]."""
        cfg, eps, be = self.cfg, self.eps, self.backend
        b, t, d = x.shape
        zH, zL, xf = (v.reshape(b * t, d).contiguous() for v in (z_H, z_L, x))
        h = K.combine(zL, eps, norm_a=False, b=zH, c=xf, want_out1=False, backend=be)[1]
        for hc in range(cfg.H_cycles):
            for lc in range(cfg.L_cycles):
                s = self._module(self.L, h, b, t)
                if lc < cfg.L_cycles - 1:       # next L input: z_L + z_H + x
                    zL, h = K.combine(s, eps, b=zH, c=xf, backend=be)
                else:                           # H input: z_H + z_L
                    zL, h = K.combine(s, eps, b=zH, backend=be)
            s = self._module(self.H, h, b, t)
            if hc < cfg.H_cycles - 1:
                zH, h = K.combine(s, eps, b=zL, c=xf, backend=be)
            else:
                zH = K.combine(s, eps, want_out1=False, backend=be)[1]
        return zH.view(b, t, d), zL.view(b, t, d)


class GraphRunner:
    """Batched HRM inference at a fixed batch size (see the module docstring)."""

    def __init__(self, model: HRM, batch_size: int, *, backend: str = 'auto',
                 halting: bool = False, segments: int | None = None, chunk: int = 1,
                 device=None, dtype: torch.dtype | None = None, graph: bool | None = None,
                 compile_mode: str | None = None, embeddings: bool = False):
        if backend not in BACKENDS:
            raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
        cfg = model.config
        device = torch.device(device) if device is not None else next(model.parameters()).device
        cuda = device.type == 'cuda'
        dtype = dtype or (getattr(torch, cfg.forward_dtype) if cuda else torch.float32)
        self.cfg, self.device, self.dtype, self.batch = cfg, device, dtype, batch_size
        self.halting, self.chunk = halting, max(1, chunk)
        self.segments = segments or cfg.halt_max_steps
        self.max_steps = cfg.halt_max_steps
        self.inner = inner = cast_inner(model.inner, dtype, device)
        inter = inner.L_level.layers[0].mlp.down_proj.weight.shape[1]
        fused_ok = K.triton_ok(inner.H_init) and K.triton_shapes_ok(cfg.hidden_size,
                                                                    cfg.num_heads, inter)
        if backend == 'auto':   # the fastest measured on an H200 (bench/hrm_gpu.py)
            backend = 'inductor' if cuda else 'eager'
        self.backend = backend
        if backend == 'fused':
            self.kernel_backend = 'triton' if fused_ok else 'torch'
            if self.kernel_backend == 'triton':
                warnings.warn("GraphRunner backend='fused' is experimental: its Triton kernels "
                              'failed parity on an H200 (README.md, "HRM on a GPU")',
                              stacklevel=2)
            self.segment = FusedSegment(inner, self.kernel_backend)
        else:
            self.kernel_backend = None

            def segment(z_H, z_L, x):
                c, _, _ = inner(InnerCarry(z_H, z_L), x)
                return c.z_H, c.z_L

            self.segment = (torch.compile(segment, dynamic=False, mode=compile_mode)
                            if backend == 'inductor' else segment)
        self.embeddings = embeddings or cfg.vocab_size == 0
        seq = cfg.seq_len
        t = seq + (0 if self.embeddings else inner.puzzle_emb_len)
        kw = dict(device=device)
        if self.embeddings:
            self.inp = torch.zeros(batch_size, seq, cfg.hidden_size, dtype=dtype, **kw)
        else:
            self.inp = torch.ones(batch_size, seq, dtype=torch.long, **kw)
        self.pid = torch.zeros(batch_size, dtype=torch.long, **kw)
        self.x = torch.zeros(batch_size, t, cfg.hidden_size, dtype=dtype, **kw)
        self.z_H, self.z_L = torch.zeros_like(self.x), torch.zeros_like(self.x)
        self.out = {'z_H': torch.zeros_like(self.x),
                    'q_halt_logits': torch.zeros(batch_size, **kw),
                    'q_continue_logits': torch.zeros(batch_size, **kw)}
        if cfg.vocab_size > 0:
            self.out['logits'] = torch.zeros(batch_size, seq, cfg.vocab_size, dtype=dtype,
                                             **kw)
        self.steps = torch.zeros(batch_size, dtype=torch.int32, **kw)
        self.halted = torch.zeros(batch_size, dtype=torch.bool, **kw)
        self.all_halted = torch.zeros((), dtype=torch.bool, **kw)
        self.graph = cuda if graph is None else graph
        self.graphs: dict = {}
        if self.graph:
            self._capture()

    # --------------------------------------------------------------- the captured work
    def _start(self):
        inner = self.inner
        if self.embeddings:
            x = inner.scale_positions(self.inp)
        else:
            x = inner.embed(self.inp, self.pid if self.cfg.puzzle_emb_ndim > 0 else None)
        self.x.copy_(x)
        self.z_H.copy_(inner.H_init.expand_as(self.z_H))
        self.z_L.copy_(inner.L_init.expand_as(self.z_L))
        self.steps.zero_()
        self.halted.zero_()
        self.all_halted.zero_()

    def _heads(self, z_H):
        inner = self.inner
        q = F.linear(z_H[:, 0], inner.q_head.weight, inner.q_head.bias).float()
        out = {'z_H': z_H, 'q_halt_logits': q[:, 0], 'q_continue_logits': q[:, 1]}
        if self.cfg.vocab_size > 0:
            out['logits'] = F.linear(z_H, inner.lm_head.weight)[:, inner.puzzle_emb_len:]
        return out

    def _fixed(self):
        self._start()
        z_H, z_L = self.z_H, self.z_L
        for _ in range(self.segments):
            z_H, z_L = self.segment(z_H, z_L, self.x)
        for k, v in self._heads(z_H).items():
            self.out[k].copy_(v)
        self.z_H.copy_(z_H)
        self.z_L.copy_(z_L)
        self.steps.fill_(self.segments)
        self.halted.fill_(True)
        self.all_halted.fill_(True)

    def _chunk(self):
        for _ in range(self.chunk):
            z_H, z_L = self.segment(self.z_H, self.z_L, self.x)
            out = self._heads(z_H)
            active = ~self.halted
            steps = self.steps + active.int()
            halt_now = active & ((out['q_halt_logits'] > out['q_continue_logits'])
                                 | (steps >= self.max_steps))
            for k, v in out.items():
                mask = active.view((-1,) + (1,) * (v.ndim - 1))
                self.out[k].copy_(torch.where(mask, v, self.out[k]))
            self.steps.copy_(steps)
            self.halted.copy_(self.halted | halt_now)
            self.z_H.copy_(z_H)
            self.z_L.copy_(z_L)
        self.all_halted.copy_(self.halted.all())

    def _parts(self):
        return {'start': self._start, 'chunk': self._chunk} if self.halting else \
            {'fixed': self._fixed}

    @torch.no_grad()
    def _capture(self):
        """Warm up (compile, autotune) on a side stream, then capture each part."""
        parts = self._parts()
        s = torch.cuda.Stream(self.device)
        s.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(s):
            for _ in range(2):
                for fn in parts.values():
                    fn()
        torch.cuda.current_stream(self.device).wait_stream(s)
        torch.cuda.synchronize(self.device)
        pool = None
        for name, fn in parts.items():
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=pool):
                fn()
            pool = g.pool()
            self.graphs[name] = g

    # --------------------------------------------------------------------- the call
    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor | None = None,
                 sync: bool = True) -> dict:
        """Solve ``inputs`` (token ids [B, seq], or embeddings [B, seq, hidden]).

        Returns ``logits`` (token models), ``z_H``, ``q_halt_logits``, ``q_continue_logits``,
        ``steps`` [B] and ``halted`` [B], and ``segments`` run (in ACT mode this reads a
        flag per chunk; in fixed mode nothing is read back unless ``sync``).
        """
        self.inp.copy_(inputs, non_blocking=True)
        if puzzle_identifiers is not None:
            self.pid.copy_(puzzle_identifiers, non_blocking=True)
        parts = self._parts()
        run = (lambda n: self.graphs[n].replay()) if self.graph else (lambda n: parts[n]())
        if not self.halting:
            run('fixed')
            segments = self.segments
        else:
            run('start')
            segments = 0
            while segments < self.max_steps:
                run('chunk')
                segments += self.chunk
                if bool(self.all_halted):       # the one host read per chunk
                    break
        if sync and self.device.type == 'cuda':
            torch.cuda.current_stream(self.device).synchronize()
        return {**self.out, 'steps': self.steps, 'halted': self.halted, 'segments': segments}
