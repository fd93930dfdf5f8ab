"""Fixed-shape HRM inference for a GPU: weights cast once, CUDA graphs, no host syncs.

``GraphRunner`` solves a batch of a fixed size. It copies the model once in the forward
dtype (bf16 on CUDA; the model's own weights are left alone), keeps every tensor it uses
in static buffers, and on CUDA captures its work in CUDA graphs, so a call is an input
copy and graph replays with no host synchronisation inside.

Backends (``backend=``):

- ``'inductor'``: the model's own segment through ``torch.compile`` (``compile_mode``).
- ``'eager'``: the model's own segment as it is.
- ``'auto'``: ``'inductor'`` on CUDA (the fastest measured on an H200), else ``'eager'``.

(A backend of hand-written Triton GEMMs with the pointwise work fused into them was
measured and removed: slower than inductor at every batch size, since its GEMMs ran at
about half of cuBLAS's rate; README.md, "HRM on a GPU".)

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

import torch
import torch.nn.functional as F

from sage_hrm.act import think
from sage_hrm.model import HRM, HRMInner, InnerCarry

BACKENDS = ('auto', 'inductor', 'eager')


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
        if backend == 'auto':   # the fastest measured on an H200 (bench/hrm_gpu.py)
            backend = 'inductor' if cuda else 'eager'
        self.backend = backend

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

            def chunk() -> bool:
                run('chunk')
                return bool(self.all_halted)     # the one host read per chunk
            chunks, _ = think(chunk, -(-self.max_steps // self.chunk))
            segments = chunks * self.chunk
        if sync and self.device.type == 'cuda':
            torch.cuda.current_stream(self.device).synchronize()
        return {**self.out, 'steps': self.steps, 'halted': self.halted, 'segments': segments}
