"""Batched ACT inference for the HRM: per-sample halting, a time budget, a persistent carry.

The reference always runs ``halt_max_steps`` segments at evaluation so that a batch halts
together. ``ACTRunner`` instead lets each sample halt on its own (``q_halt > q_continue``
or ``halt_max_steps`` reached); halted samples are frozen (their answer is kept, their
compute is skipped when ``compact=True``). A call can be given a wall-clock budget: it
stops before the next segment would overrun it and returns the best answer so far (the
latest segment's output of every sample). The carry persists across calls, so a stream of
inputs (e.g. sensor tokens each control cycle) keeps thinking where it left off; a sample
that halted starts from the learned initial state on its next call (``reset_on_halt``).

Usage::

    runner = ACTRunner(model)                  # model: sage_hrm.model.HRM
    out = runner({'inputs': ids}, budget_s=0.02)
    out['logits'], out['z_H'], out['halted'], out['steps'], out['segments']
"""

from __future__ import annotations

import math
import time

import torch

from sage_hrm.act import SegmentClock, think
from sage_hrm.model import HRM, InnerCarry


class ACTRunner:
    """Stateful batched ACT inference around an :class:`HRM` (eval mode, no grad)."""

    def __init__(self, model: HRM, max_steps: int | None = None, use_q_halt: bool = True,
                 reset_on_halt: bool = True, compact: bool = True):
        self.model = model
        self.max_steps = max_steps or model.config.halt_max_steps
        self.use_q_halt = use_q_halt
        self.reset_on_halt = reset_on_halt
        self.compact = compact
        self.carry: InnerCarry | None = None
        self.steps: torch.Tensor | None = None     # segments since the last reset, per sample
        self.halted: torch.Tensor | None = None
        self.outputs: dict | None = None            # latest answer of every sample
        self.clock = SegmentClock()                # running estimate of one segment's time

    def reset(self) -> None:
        """Forget the carry: the next call starts every sample from the initial state."""
        self.carry = self.steps = self.halted = self.outputs = None

    def _input(self, batch: dict) -> torch.Tensor:
        return self.model._input(batch)

    @torch.no_grad()
    def __call__(self, batch: dict, budget_s: float | None = None,
                 max_segments: int | None = None) -> dict:
        """Think about ``batch`` until every sample halts, the budget or max_segments is spent.

        Returns a dict: ``z_H`` [B, T, hidden], ``logits`` (when the model has a vocabulary),
        ``q_halt_logits``, ``q_continue_logits``, ``halted`` [B] bool, ``steps`` [B] (segments
        since each sample's reset), ``segments`` (run in this call), ``elapsed_s``.
        At least one segment runs per call, so an answer always exists.
        """
        t0 = time.perf_counter()
        model = self.model
        inner = model.inner
        x = self._input(batch)
        b = x.shape[0]
        if self.carry is None or self.carry.z_H.shape[0] != b:
            self.carry = inner.empty_carry(b, x.shape[1], x.device)
            self.steps = torch.zeros(b, dtype=torch.int32, device=x.device)
            self.halted = torch.ones(b, dtype=torch.bool, device=x.device)
            self.outputs = None
        # Samples that halted last call start again (or all continue when reset_on_halt=False).
        reset = self.halted if self.reset_on_halt else torch.zeros_like(self.halted)
        self.carry = inner.reset_carry(reset, self.carry)
        self.steps = torch.where(reset, 0, self.steps)
        active = torch.ones(b, dtype=torch.bool, device=x.device)
        outs = self.outputs
        state = {'active': active, 'outs': outs}

        def segment() -> bool:
            active, outs = state['active'], state['outs']
            idx = active.nonzero().squeeze(1) if self.compact else None
            if idx is not None and idx.numel() < b:
                sub = InnerCarry(self.carry.z_H[idx], self.carry.z_L[idx])
                new, z_H, (qh, qc) = inner(sub, x[idx])
                self.carry.z_H[idx], self.carry.z_L[idx] = new.z_H, new.z_L
            else:
                idx = None
                new, z_H, (qh, qc) = inner(self.carry, x)
                self.carry = InnerCarry(torch.where(active.view(-1, 1, 1), new.z_H,
                                                    self.carry.z_H),
                                        torch.where(active.view(-1, 1, 1), new.z_L,
                                                    self.carry.z_L))
            seg = {'z_H': z_H, 'q_halt_logits': qh, 'q_continue_logits': qc}
            if model.config.vocab_size > 0:
                seg['logits'] = inner.lm_head(z_H)[:, inner.puzzle_emb_len:]
            outs = state['outs'] = _merge(outs, seg, idx, active, b)
            self.steps = self.steps + active.int()
            halt = self.steps >= self.max_steps
            if self.use_q_halt:
                halt = halt | (outs['q_halt_logits'] > outs['q_continue_logits'])
            state['active'] = active & ~halt
            return not bool(state['active'].any())
        segments, _ = think(segment, max_segments or self.max_steps,
                            math.inf if budget_s is None else budget_s, self.clock)
        active, outs = state['active'], state['outs']
        self.halted = ~active
        self.outputs = outs
        return {**outs, 'halted': self.halted.clone(), 'steps': self.steps.clone(),
                'segments': segments, 'elapsed_s': time.perf_counter() - t0}


def _merge(prev: dict | None, seg: dict, idx, active: torch.Tensor, b: int) -> dict:
    """Write the new segment's outputs into the rows of the samples still active."""
    if prev is None or any(k not in prev or prev[k].shape[0] != b for k in seg):
        if idx is None:
            return {k: v.clone() for k, v in seg.items()}
        prev = {k: v.new_zeros((b,) + v.shape[1:]) for k, v in seg.items()}
    out = {}
    for k, v in seg.items():
        if idx is not None:
            t = prev[k].clone()
            t[idx] = v.to(t.dtype)
        else:
            mask = active.view((-1,) + (1,) * (v.ndim - 1))
            t = torch.where(mask, v.to(prev[k].dtype), prev[k])
        out[k] = t
    return out
