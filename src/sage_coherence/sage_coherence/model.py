"""The coherence model: the HRM core with one token per sensor modality.

Each modality's feature is projected to the hidden size and scaled by the
trust the model decides to use; a learned modality embedding and an encoding
of (reported trust, age) are added. A readout token comes first. The HRM
(sage_hrm.model.HRMInner) iterates over these tokens; its recurrent state
is carried across control cycles (streaming). Heads on the readout token give
a discrete action distribution, a continuous command, a coherence score and
the ACT halting logit.

Trust used: ``sigmoid(gain * logit(trust_in) + bias_m + w·token_m)`` (staleness is
already folded into trust_in by the FeatureBuffer), initialised
close to the reported trust, so the model starts by believing its sensors and
learns where not to (sensor-fault augmentation in training teaches it).

Token sets: a modality listed in ``token_sets`` (the memory's places) is not one
token but ``n`` of equal size, each starting with a valid flag; invalid ones are
padding that no token attends to. The trailing ``E`` numbers of each (a label's
sentence embedding) are compared with the ``match`` modality's vector (the
instruction's embedding): the cosine and its margin to the best valid token's join
the token, so "which remembered thing is the one asked for" is a feature even for
labels never seen in training (a phrasing shifts every cosine, never their order).

Halting: like TRM, one Q logit, ``halt`` = P(the current answer is right); a
cycle stops thinking when it is confident, after ``max_segments``, or when its
time budget is spent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sage_hrm.model import HRMConfig, HRMInner, InnerCarry


@dataclass
class CoherenceConfig:
    """Modalities (ordered name -> feature size), action set and HRM size."""

    modalities: dict = field(default_factory=dict)
    actions: tuple = ()
    action_values: tuple = ()              # (v, w) of each discrete action (cmd_vel)
    continuous_scale: tuple = (0.5, 1.2)   # |v| m/s, |w| rad/s at tanh = 1
    max_age_s: float = 2.0                 # ages are normalised by this
    max_segments: int = 4
    token_sets: dict = field(default_factory=dict)   # modality -> [tokens, embedding size]
    match: str = ''                        # the modality token-set embeddings are matched to
    hrm: dict = field(default_factory=lambda: dict(
        hidden_size=64, num_heads=2, H_layers=1, L_layers=1, H_cycles=2, L_cycles=2,
        pos_encodings='none', expansion=2.0, halt_max_steps=4))

    def to_dict(self) -> dict:
        """JSON-serialisable form (saved in checkpoints)."""
        d = asdict(self)
        d['actions'] = list(self.actions)
        d['action_values'] = [list(v) for v in self.action_values]
        d['continuous_scale'] = list(self.continuous_scale)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> 'CoherenceConfig':
        """Inverse of to_dict."""
        d = dict(d)
        d['actions'] = tuple(d['actions'])
        d['action_values'] = tuple(tuple(v) for v in d.get('action_values', ()))
        d['continuous_scale'] = tuple(d['continuous_scale'])
        return cls(**d)

    @property
    def seq_len(self) -> int:
        """Tokens the HRM sees: a readout, one per modality, ``n`` per token set."""
        sets = {m: int(v[0]) for m, v in self.token_sets.items()}
        return 1 + sum(sets.get(m, 1) for m in self.modalities)

    def hrm_config(self) -> HRMConfig:
        """Return the HRM configuration for ``seq_len`` tokens."""
        return HRMConfig(**{**self.hrm, 'seq_len': self.seq_len, 'vocab_size': 0})


class CoherenceModel(nn.Module):
    """Fuse trust-weighted modality tokens with the HRM; see the module doc."""

    def __init__(self, cfg: CoherenceConfig):
        super().__init__()
        self.cfg = cfg
        self.names = list(cfg.modalities)
        self.dims = [int(cfg.modalities[m]) for m in self.names]
        hcfg = cfg.hrm_config()
        hidden = hcfg.hidden_size
        self.core = HRMInner(hcfg)
        for m, (n, e) in cfg.token_sets.items():
            d = cfg.modalities.get(m, 0)
            if not d or n < 1 or d % n or not 0 <= e < d // n or \
                    (e and cfg.modalities.get(cfg.match) != e):
                raise ValueError(f'token set {m}: {n} tokens of its {d} numbers, embeddings '
                                 f'of {e} matched to {cfg.match!r}: sizes do not fit')
        self.sets = {self.names.index(m): (int(n), int(e)) for m, (n, e) in
                     cfg.token_sets.items()}
        # a token set's tokens share one projection (with the match cosine and margin)
        in_dims = [d // self.sets[i][0] + 2 if i in self.sets else d
                   for i, d in enumerate(self.dims)]
        self.proj = nn.ModuleList(nn.Sequential(nn.LayerNorm(d), nn.Linear(d, hidden))
                                  for d in in_dims)
        owner = [i for i in range(len(self.dims)) for _ in range(self.sets.get(i, (1,))[0])]
        self.register_buffer('owner', torch.tensor(owner), persistent=False)  # token -> modality
        self.modality_emb = nn.Parameter(torch.randn(len(self.dims) + 1, hidden) * 0.02)
        self.quality = nn.Linear(2, hidden)
        self.trust_token = nn.Linear(hidden, 1)
        self.trust_gain = nn.Parameter(torch.ones(1))
        self.trust_bias = nn.Parameter(torch.zeros(len(self.dims)))
        nn.init.zeros_(self.trust_token.weight)
        nn.init.zeros_(self.trust_token.bias)
        self.action_head = nn.Linear(hidden, len(cfg.actions))
        self.continuous_head = nn.Linear(hidden, len(cfg.continuous_scale))
        self.coherence_head = nn.Linear(hidden, 1)
        self.register_buffer('scale', torch.tensor(cfg.continuous_scale, dtype=torch.float32))

    @property
    def feature_size(self) -> int:
        """Length of the concatenated feature vector the model takes."""
        return sum(self.dims)

    def initial_carry(self, batch: int, device=None) -> InnerCarry:
        """Return a fresh recurrent state (episode start)."""
        carry = self.core.empty_carry(batch, self.cfg.seq_len, device)
        return self.core.reset_carry(torch.ones(batch, dtype=torch.bool, device=device), carry)

    def tokens(self, features: torch.Tensor, trust: torch.Tensor, age: torch.Tensor,
               uniform_trust: bool = False):
        """Build the input tokens; return (tokens [B, T, H], trust_used [B, M], mask [B, T]).

        ``mask`` is True for tokens that count (False: an empty slot of a token set).
        """
        parts = list(torch.split(features, self.dims, dim=-1))
        match = parts[self.names.index(self.cfg.match)] if self.cfg.match else None
        projected, valid = [], []
        for i, (p, x) in enumerate(zip(self.proj, parts)):
            if i not in self.sets:
                projected.append(p(x)[:, None])
                valid.append(torch.ones_like(x[:, :1], dtype=torch.bool))
                continue
            n, e = self.sets[i]
            x = x.reshape(x.shape[0], n, -1)
            ok = x[..., 0] > 0.5
            cos = (F.cosine_similarity(x[..., -e:], match[:, None], dim=-1, eps=1e-6)
                   if e else torch.zeros_like(x[..., 0]))
            best = torch.where(ok, cos, torch.full_like(cos, -1.0)).amax(1, keepdim=True)
            projected.append(p(torch.cat([x, cos[..., None], (cos - best)[..., None]], -1)))
            valid.append(ok)
        pooled = torch.stack([(t * v[..., None]).sum(1) / v.sum(1, keepdim=True).clamp_min(1)
                              for t, v in zip(projected, valid)], dim=1)     # [B, M, H]
        age_n = (age / self.cfg.max_age_s).clamp(0, 1)
        if uniform_trust:
            trust_used = torch.ones_like(trust)
        else:
            logit_in = torch.logit(trust.clamp(1e-3, 1 - 1e-3))
            trust_used = torch.sigmoid(self.trust_gain * logit_in + self.trust_bias
                                       + self.trust_token(pooled).squeeze(-1))
        per_modality = self.quality(torch.stack([trust, age_n], dim=-1)) + self.modality_emb[1:]
        body = trust_used[:, self.owner, None] * torch.cat(projected, 1) + \
            per_modality[:, self.owner]
        readout = self.modality_emb[:1].expand(features.shape[0], 1, -1)
        mask = torch.cat([torch.ones_like(valid[0][:, :1]), *valid], dim=1)
        return torch.cat([readout, body], dim=1), trust_used, mask

    def segment(self, carry: InnerCarry, x: torch.Tensor, mask: torch.Tensor | None = None):
        """One HRM segment on prepared tokens; return (carry, heads dict)."""
        carry, z_H, (q_halt, _) = self.core(carry, x.to(self.core.dtype), mask)
        h = z_H[:, 0].float()
        return carry, {
            'action_logits': self.action_head(h),
            'continuous': torch.tanh(self.continuous_head(h)) * self.scale,
            'coherence': torch.sigmoid(self.coherence_head(h)).squeeze(-1),
            'halt_logit': q_halt,
        }

    def forward(self, carry: InnerCarry, features, trust, age, uniform_trust: bool = False):
        """Tokens + one segment (the training step and the ONNX graph)."""
        x, trust_used, mask = self.tokens(features, trust, age, uniform_trust)
        carry, out = self.segment(carry, x, mask)
        out['trust_used'] = trust_used
        return carry, out


def bc_loss(out: dict, teacher_id: torch.Tensor, teacher_cont: torch.Tensor,
            scale: torch.Tensor, weight: torch.Tensor | None = None,
            trust_target: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Behaviour-cloning loss with the coherence, halting and trust heads.

    ``weight`` [B] weights samples (reward-weighted learning); ``trust_target``
    [B, M] (NaN where unknown) supervises trust_used where augmentation knows
    a modality was corrupted.
    """
    w = torch.ones_like(teacher_id, dtype=torch.float32) if weight is None else weight
    ce = F.cross_entropy(out['action_logits'], teacher_id, reduction='none')
    mse = ((out['continuous'] - teacher_cont) / scale).pow(2).mean(-1)
    correct = (out['action_logits'].argmax(-1) == teacher_id).float()
    coh = F.binary_cross_entropy(out['coherence'].clamp(1e-6, 1 - 1e-6), correct,
                                 reduction='none')
    halt = F.binary_cross_entropy_with_logits(out['halt_logit'].float(), correct,
                                              reduction='none')
    norm = w.sum().clamp_min(1e-6)
    loss = (w * (ce + mse + 0.1 * coh + 0.1 * halt)).sum() / norm
    live = (w > 0).float()
    count = live.sum().clamp_min(1.0)
    terms = {'ce': float((live * ce).sum().detach() / count),
             'accuracy': float((live * correct).sum() / count)}
    if trust_target is not None:
        known = ~torch.isnan(trust_target)
        if known.any():
            tl = F.binary_cross_entropy(out['trust_used'][known].clamp(1e-6, 1 - 1e-6),
                                        trust_target[known])
            loss = loss + 0.2 * tl
            terms['trust'] = float(tl.detach())
    return loss, terms
