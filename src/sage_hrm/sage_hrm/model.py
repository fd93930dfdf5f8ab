"""The Hierarchical Reasoning Model (HRM), after sapientinc/HRM models/hrm/hrm_act_v1.py.

Two recurrent transformer modules iterate: L (fast) runs ``L_cycles`` times per
H (slow) step, H runs ``H_cycles`` times per segment. Blocks are post-norm
(RMSNorm without weights), SwiGLU, RoPE, non-causal attention through
``F.scaled_dot_product_attention``. Inputs are injected by addition
(``z_L <- L(z_L, z_H + x)``, ``z_H <- H(z_H, z_L)``). Only the last L and H
calls of a segment carry gradients (the one-step gradient); the carry between
segments is detached (deep supervision). ACT halting uses a Q head on the
first token: halt when ``q_halt > q_continue`` (training only, with
exploration), always at ``halt_max_steps``.

API
---
``HRMConfig``      one dataclass for every size (``tiny``, ``coherence``, ``sudoku_paper``).
``HRMInner``       one segment: ``forward(carry, x) -> (carry, z_H, (q_halt, q_continue))``
                   where ``x`` is the input embedding [B, T, hidden] (token mode: use
                   ``embed(ids)``); other models attach heads to ``z_H``.
``HRM``            the ACT wrapper of the reference: ``initial_carry(batch)``,
                   ``forward(carry, batch) -> (carry, outputs)``. ``batch`` holds either
                   ``inputs`` (token ids [B, T]) or ``embeddings`` ([B, T, hidden]).
                   ``outputs``: ``z_H``, ``q_halt_logits``, ``q_continue_logits``, ``logits``
                   (when ``vocab_size > 0``), and ``target_q_continue`` in training.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class HRMConfig:
    """Every size of HRM, from a CPU toy to the paper's 27.3M Sudoku model."""

    seq_len: int = 16
    vocab_size: int = 0              # 0: the caller supplies input embeddings, no lm_head
    hidden_size: int = 128
    num_heads: int = 4
    expansion: float = 4.0
    H_layers: int = 2
    L_layers: int = 2
    H_cycles: int = 2
    L_cycles: int = 2
    pos_encodings: str = 'rope'      # 'rope' | 'learned' | 'none' (sets of sensor tokens)
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    halt_max_steps: int = 8
    halt_exploration_prob: float = 0.1
    puzzle_emb_ndim: int = 0         # per-puzzle embedding width (0: none)
    num_puzzle_identifiers: int = 1
    forward_dtype: str = 'float32'   # 'bfloat16' on GPU
    # TRM-paper option (default off = the HRM paper): backprop through the whole last H cycle.
    full_backprop_last_cycle: bool = False
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict (saved with checkpoints)."""
        return asdict(self)

    @classmethod
    def tiny(cls, **kw) -> 'HRMConfig':
        """Return a model config that trains in minutes on 2 CPU cores."""
        return cls(**{**dict(hidden_size=64, num_heads=2, H_layers=1, L_layers=1), **kw})

    @classmethod
    def sudoku_paper(cls, **kw) -> 'HRMConfig':
        """Return the paper's Sudoku-Extreme configuration (27.3M parameters)."""
        return cls(**{**dict(seq_len=81, vocab_size=11, hidden_size=512, num_heads=8,
                             expansion=4.0, H_layers=4, L_layers=4, H_cycles=2, L_cycles=2,
                             halt_max_steps=16, halt_exploration_prob=0.1,
                             puzzle_emb_ndim=512, num_puzzle_identifiers=1,
                             forward_dtype='bfloat16'), **kw})


def trunc_normal_init_(tensor: torch.Tensor, std: float = 1.0, lower: float = -2.0,
                       upper: float = 2.0) -> torch.Tensor:
    """Fill with a truncated normal with the requested std (JAX's definition, as the reference)."""
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        sqrt2 = math.sqrt(2)
        a, b = math.erf(lower / sqrt2), math.erf(upper / sqrt2)
        z = (b - a) / 2
        c = (2 * math.pi) ** -0.5
        pdf_u, pdf_l = c * math.exp(-0.5 * lower ** 2), c * math.exp(-0.5 * upper ** 2)
        comp_std = std / math.sqrt(1 - (upper * pdf_u - lower * pdf_l) / z
                                   - ((pdf_u - pdf_l) / z) ** 2)
        tensor.uniform_(a, b).erfinv_().mul_(sqrt2 * comp_std)
        return tensor.clip_(lower * comp_std, upper * comp_std)


class CastedLinear(nn.Module):
    """Linear layer with LeCun truncated-normal init, cast to the input dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_init_(torch.empty(out_features, in_features),
                                                      std=in_features ** -0.5))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Apply RMSNorm without a learned scale, computed in float32."""
    dtype = x.dtype
    x = x.float()
    return (x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)).to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """Precomputed RoPE cos/sin tables."""

    def __init__(self, dim: int, max_positions: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        freqs = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer('cos', emb.cos(), persistent=False)
        self.register_buffer('sin', emb.sin(), persistent=False)

    def forward(self):
        """Return (cos, sin), each [T, head_dim]."""
        return self.cos, self.sin


class Attention(nn.Module):
    """Non-causal multi-head attention with RoPE, via scaled_dot_product_attention."""

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, hidden_size // num_heads
        self.qkv_proj = CastedLinear(hidden_size, 3 * hidden_size, bias=False)
        self.o_proj = CastedLinear(hidden_size, hidden_size, bias=False)

    def forward(self, cos_sin, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` [B, 1, 1, T] bool: which tokens may be attended to (None: all)."""
        b, t, _ = x.shape
        qkv = self.qkv_proj(x).view(b, t, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(2)                       # [b, t, heads, head_dim]
        if cos_sin is not None:
            cos, sin = cos_sin[0][:t, None, :], cos_sin[1][:t, None, :]
            dtype = q.dtype
            q = (q.to(cos.dtype) * cos + _rotate_half(q.to(cos.dtype)) * sin).to(dtype)
            k = (k.to(cos.dtype) * cos + _rotate_half(k.to(cos.dtype)) * sin).to(dtype)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class SwiGLU(nn.Module):
    """SwiGLU MLP; the inner width is rounded up to a multiple of 256 as in the reference."""

    def __init__(self, hidden_size: int, expansion: float):
        super().__init__()
        inter = -(round(expansion * hidden_size * 2 / 3) // -256) * 256
        self.gate_up_proj = CastedLinear(hidden_size, 2 * inter, bias=False)
        self.down_proj = CastedLinear(inter, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    """Post-norm transformer block."""

    def __init__(self, cfg: HRMConfig):
        super().__init__()
        self.self_attn = Attention(cfg.hidden_size, cfg.num_heads)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.expansion)
        self.eps = cfg.rms_norm_eps

    def forward(self, cos_sin, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = rms_norm(x + self.self_attn(cos_sin, x, mask), self.eps)
        return rms_norm(x + self.mlp(x), self.eps)


class ReasoningModule(nn.Module):
    """A stack of blocks with input injection by addition."""

    def __init__(self, cfg: HRMConfig, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg) for _ in range(layers))

    def forward(self, z: torch.Tensor, injection: torch.Tensor, cos_sin,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        z = z + injection
        for layer in self.layers:
            z = layer(cos_sin, z, mask)
        return z


@dataclass
class InnerCarry:
    """The recurrent state of H and L."""

    z_H: torch.Tensor
    z_L: torch.Tensor


class HRMInner(nn.Module):
    """One segment of H/L iterations (no halting logic)."""

    def __init__(self, cfg: HRMConfig):
        super().__init__()
        self.config = cfg
        self.dtype = getattr(torch, cfg.forward_dtype)
        self.embed_scale = math.sqrt(cfg.hidden_size)
        self.puzzle_emb_len = -(cfg.puzzle_emb_ndim // -cfg.hidden_size)
        total_len = cfg.seq_len + self.puzzle_emb_len
        if cfg.vocab_size > 0:
            self.embed_tokens = nn.Parameter(trunc_normal_init_(
                torch.empty(cfg.vocab_size, cfg.hidden_size), std=1.0 / self.embed_scale))
            self.lm_head = CastedLinear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.puzzle_emb_ndim > 0:
            # zero init as the reference; trained with sign-SGD (sage_hrm.train)
            self.puzzle_emb = nn.Embedding(cfg.num_puzzle_identifiers, cfg.puzzle_emb_ndim,
                                           sparse=True)
            nn.init.zeros_(self.puzzle_emb.weight)
        self.q_head = CastedLinear(cfg.hidden_size, 2, bias=True)
        if cfg.pos_encodings == 'rope':
            self.rotary_emb = RotaryEmbedding(cfg.hidden_size // cfg.num_heads, total_len,
                                              cfg.rope_theta)
        elif cfg.pos_encodings == 'learned':
            self.embed_pos = nn.Parameter(trunc_normal_init_(
                torch.empty(total_len, cfg.hidden_size), std=1.0 / self.embed_scale))
        elif cfg.pos_encodings != 'none':
            raise ValueError(f"pos_encodings must be 'rope', 'learned' or 'none', "
                             f'got {cfg.pos_encodings!r}')
        self.H_level = ReasoningModule(cfg, cfg.H_layers)
        self.L_level = ReasoningModule(cfg, cfg.L_layers)
        self.register_buffer('H_init', trunc_normal_init_(torch.empty(cfg.hidden_size), std=1))
        self.register_buffer('L_init', trunc_normal_init_(torch.empty(cfg.hidden_size), std=1))
        with torch.no_grad():  # Q starts near "continue" for faster bootstrapping
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5)

    def embed(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor | None = None):
        """Token ids [B, T] (and puzzle ids [B]) -> scaled input embeddings [B, T', hidden]."""
        cfg = self.config
        x = F.embedding(inputs.long(), self.embed_tokens.to(self.dtype))
        if cfg.puzzle_emb_ndim > 0:
            pe = self.puzzle_emb(puzzle_identifiers.long()).to(self.dtype)
            pad = self.puzzle_emb_len * cfg.hidden_size - pe.shape[-1]
            pe = F.pad(pe, (0, pad)) if pad > 0 else pe
            x = torch.cat((pe.view(-1, self.puzzle_emb_len, cfg.hidden_size), x), dim=-2)
        return self.scale_positions(x)

    def scale_positions(self, x: torch.Tensor) -> torch.Tensor:
        """Add learned positions (if configured) and apply the embedding scale."""
        if self.config.pos_encodings == 'learned':
            x = 0.707106781 * (x + self.embed_pos.to(x.dtype)[: x.shape[1]])
        return self.embed_scale * x

    def empty_carry(self, batch: int, seq: int, device=None) -> InnerCarry:
        """Return an uninitialised carry; reset_carry fills it before use."""
        shape = (batch, seq, self.config.hidden_size)
        return InnerCarry(torch.zeros(shape, dtype=self.dtype, device=device),
                          torch.zeros(shape, dtype=self.dtype, device=device))

    def reset_carry(self, reset: torch.Tensor, carry: InnerCarry) -> InnerCarry:
        """Replace the carry of samples flagged in ``reset`` [B] by the learned init states."""
        flag = reset.view(-1, 1, 1)
        return InnerCarry(torch.where(flag, self.H_init.to(carry.z_H.dtype), carry.z_H),
                          torch.where(flag, self.L_init.to(carry.z_L.dtype), carry.z_L))

    def forward(self, carry: InnerCarry, x: torch.Tensor, mask: torch.Tensor | None = None):
        """Run one segment on input embedding ``x``; only the last L and H calls get grads.

        ``mask`` [B, T] bool (None: all): padding tokens that no token attends to.
        """
        cfg = self.config
        cos_sin = self.rotary_emb() if cfg.pos_encodings == 'rope' else None
        mask = None if mask is None else mask[:, None, None, :]
        z_H, z_L = carry.z_H, carry.z_L
        # With full_backprop_last_cycle the whole last H cycle keeps its graph (TRM).
        grad_from = (cfg.H_cycles - 1, 0) if cfg.full_backprop_last_cycle else \
            (cfg.H_cycles - 1, cfg.L_cycles - 1)
        with torch.no_grad():
            for h in range(cfg.H_cycles):
                for step in range(cfg.L_cycles):
                    if (h, step) >= grad_from:
                        break
                    z_L = self.L_level(z_L, z_H + x, cos_sin, mask)
                if h == cfg.H_cycles - 1:
                    break
                z_H = self.H_level(z_H, z_L, cos_sin, mask)
        for _ in range(cfg.L_cycles - grad_from[1]):
            z_L = self.L_level(z_L, z_H + x, cos_sin, mask)
        z_H = self.H_level(z_H, z_L, cos_sin, mask)
        q = self.q_head(z_H[:, 0]).float()
        return InnerCarry(z_H.detach(), z_L.detach()), z_H, (q[..., 0], q[..., 1])


@dataclass
class Carry:
    """ACT carry: the inner state plus per-sample step counts, halt flags and current data."""

    inner: InnerCarry
    steps: torch.Tensor
    halted: torch.Tensor
    current_data: dict


class HRM(nn.Module):
    """The ACT wrapper of the reference, token or embedding input."""

    def __init__(self, cfg: HRMConfig):
        super().__init__()
        self.config = cfg
        self.inner = HRMInner(cfg)

    def _input(self, batch: dict) -> torch.Tensor:
        if 'embeddings' in batch:
            return self.inner.scale_positions(batch['embeddings'].to(self.inner.dtype))
        return self.inner.embed(batch['inputs'], batch.get('puzzle_identifiers'))

    def initial_carry(self, batch: dict) -> Carry:
        """All samples start halted, so the first forward resets them."""
        ref = batch['embeddings'] if 'embeddings' in batch else batch['inputs']
        b, device = ref.shape[0], ref.device
        seq = ref.shape[1] + self.inner.puzzle_emb_len * ('embeddings' not in batch)
        return Carry(self.inner.empty_carry(b, seq, device),
                     torch.zeros(b, dtype=torch.int32, device=device),
                     torch.ones(b, dtype=torch.bool, device=device),
                     {k: torch.zeros_like(v) for k, v in batch.items()})

    def forward(self, carry: Carry, batch: dict):
        """One ACT step: reset halted samples, run a segment, decide halting."""
        cfg = self.config
        inner = self.inner.reset_carry(carry.halted, carry.inner)
        steps = torch.where(carry.halted, 0, carry.steps)
        data = {k: torch.where(carry.halted.view((-1,) + (1,) * (batch[k].ndim - 1)),
                               batch[k], v) for k, v in carry.current_data.items()}
        x = self._input(data)
        inner, z_H, (q_halt, q_cont) = self.inner(inner, x)
        outputs = {'z_H': z_H, 'q_halt_logits': q_halt, 'q_continue_logits': q_cont}
        if cfg.vocab_size > 0:
            outputs['logits'] = self.inner.lm_head(z_H)[:, self.inner.puzzle_emb_len:]
        with torch.no_grad():
            steps = steps + 1
            last = steps >= cfg.halt_max_steps
            halted = last
            if self.training and cfg.halt_max_steps > 1:
                halted = halted | (q_halt > q_cont)
                explore = (torch.rand_like(q_halt) < cfg.halt_exploration_prob)
                min_steps = explore * torch.randint_like(steps, 2, cfg.halt_max_steps + 1)
                halted = halted & (steps >= min_steps)
                next_halt, next_cont = self.inner(inner, x)[-1]
                outputs['target_q_continue'] = torch.sigmoid(
                    torch.where(last, next_halt, torch.maximum(next_halt, next_cont)))
        return Carry(inner, steps, halted, data), outputs
