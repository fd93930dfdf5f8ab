"""Training and evaluation of the HRM on token puzzles (after sapientinc/HRM pretrain.py).

Deep supervision as the reference: the ACT carry persists across training steps; every
step takes a fresh batch, samples that halted take the new batch's data and restart from
the initial state, the others keep thinking on their old puzzle. The loss is the
reference's ``ACTLossHead``: (stablemax) cross-entropy per token averaged per sample,
plus ``0.5 * (BCE(q_halt, exact) + BCE(q_continue, target_q))``.

Optimizers: AdamW for the dense weights (the reference uses AdamATan2, which has no
pinned PyPI wheel for torch 2.13), sign-SGD for the sparse puzzle embeddings
(:class:`SignSGDSparse`). Linear warm-up then cosine decay. Optional EMA of weights
(TRM paper; off by default).

Exact resume: a checkpoint holds the model, optimizers, EMA, ACT carry, the data
sampler's generator and the global torch RNGs, CPU and CUDA (ACT exploration draws on the
device's); it is written
atomically (temp file + ``os.replace``), so a run killed at any moment resumes with the
same next loss.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sage_hrm.model import HRM, Carry, HRMConfig, InnerCarry

IGNORE = -100


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Return the log of the stablemax s(x)/sum s(x), s(x) = x+1 (x>=0) or 1/(1-x) (x<0)."""
    s = torch.where(x < 0, 1 / (1 - x + 1e-30), x + 1)
    return torch.log(s / s.sum(dim=dim, keepdim=True))


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token stablemax cross-entropy in float64 (0 where label == IGNORE)."""
    logp = log_stablemax(logits.double())
    valid = labels != IGNORE
    picked = logp.gather(-1, torch.where(valid, labels, 0).long().unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, picked, 0)


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token softmax cross-entropy in float32 (0 where label == IGNORE)."""
    return F.cross_entropy(logits.float().flatten(0, -2), labels.long().flatten(),
                           ignore_index=IGNORE, reduction='none').view(labels.shape)


LOSSES = {'stablemax': stablemax_cross_entropy, 'softmax': softmax_cross_entropy}


def act_loss(outputs: dict, labels: torch.Tensor, halted: torch.Tensor, loss: str):
    """Compute the reference's ACT loss and metrics (sums over the batch)."""
    logits = outputs['logits']
    with torch.no_grad():
        mask = labels != IGNORE
        counts = mask.sum(-1)
        correct = mask & (logits.argmax(-1) == labels)
        exact = correct.sum(-1) == counts
        valid = halted & (counts > 0)
        metrics = {'count': valid.sum(), 'exact': (valid & exact).sum(),
                   'accuracy': torch.where(valid, correct.float().sum(-1)
                                           / counts.clamp_min(1), 0).sum()}
    lm = (LOSSES[loss](logits, labels) / counts.clamp_min(1).unsqueeze(-1)).sum()
    q_halt = F.binary_cross_entropy_with_logits(outputs['q_halt_logits'], exact.float(),
                                                reduction='sum')
    q_cont = 0
    if 'target_q_continue' in outputs:
        q_cont = F.binary_cross_entropy_with_logits(outputs['q_continue_logits'],
                                                    outputs['target_q_continue'],
                                                    reduction='sum')
    metrics['lm_loss'] = lm.detach()
    return lm + 0.5 * (q_halt + q_cont), metrics


class SignSGDSparse(torch.optim.Optimizer):
    """Sign-SGD with decoupled weight decay for sparse embedding rows (as the reference).

    Only the rows present in the batch are updated; duplicate ids' gradients are summed.
    """

    def __init__(self, params, lr: float = 1e-2, weight_decay: float = 0.1):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        """Apply one update."""
        for group in self.param_groups:
            for p in group['params']:
                if p.grad is None:
                    continue
                g = p.grad.coalesce()
                ids, vals = g.indices()[0], g.values()
                rows = p[ids] * (1 - group['lr'] * group['weight_decay'])
                p[ids] = rows - group['lr'] * vals.sign()


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run (reference defaults where they apply)."""

    batch_size: int = 64
    steps: int = 1000
    lr: float = 1e-4
    lr_warmup_steps: int = 100
    lr_min_ratio: float = 1.0
    weight_decay: float = 1.0
    betas: tuple = (0.9, 0.95)
    puzzle_emb_lr: float = 1e-2
    puzzle_emb_weight_decay: float = 1.0
    loss: str = 'stablemax'
    ema: float = 0.0              # TRM option: EMA decay of weights (0 = off, the HRM paper)
    checkpoint_every: int = 200
    log_every: int = 50
    seed: int = 0
    augment: bool = False
    compile: bool = False         # torch.compile the ACT forward (GPU training)


class Trainer:
    """Deep-supervision ACT training over arrays of token inputs and labels."""

    def __init__(self, model_cfg: HRMConfig, cfg: TrainConfig, inputs: np.ndarray,
                 labels: np.ndarray, puzzle_ids: np.ndarray | None = None,
                 device: str = 'cpu', augment_fn=None):
        torch.manual_seed(cfg.seed)
        self.cfg, self.device = cfg, torch.device(device)
        self.model = HRM(model_cfg).to(self.device)
        self.inputs = torch.as_tensor(inputs, dtype=torch.long)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.puzzle_ids = torch.as_tensor(puzzle_ids if puzzle_ids is not None
                                          else np.zeros(len(inputs)), dtype=torch.long)
        self.augment_fn = augment_fn
        sparse = [p for n, p in self.model.named_parameters() if 'puzzle_emb' in n]
        dense = [p for n, p in self.model.named_parameters() if 'puzzle_emb' not in n]
        self.opt = torch.optim.AdamW(dense, lr=cfg.lr, betas=cfg.betas,
                                     weight_decay=cfg.weight_decay)
        self.sparse_opt = SignSGDSparse(sparse, cfg.puzzle_emb_lr,
                                        cfg.puzzle_emb_weight_decay) if sparse else None
        self.ema = copy.deepcopy(self.model).eval() if cfg.ema > 0 else None
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.carry: Carry | None = None
        self._fwd = torch.compile(self.model) if cfg.compile else self.model

    def warmup(self) -> None:
        """Run one forward/backward (compiling it) and undo it: no update, same RNG and carry.

        Lets a timed run exclude compilation without changing what it computes.
        """
        gen, rng = self.gen.get_state(), torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if self.device.type == 'cuda' else None
        self.model.train()
        batch = self.next_batch()
        carry = self.carry if self.carry is not None else self.model.initial_carry(batch)
        carry, out = self._fwd(carry, batch)
        loss, _ = act_loss(out, carry.current_data['labels'], carry.halted, self.cfg.loss)
        (loss / self.cfg.batch_size).backward()
        self.opt.zero_grad(set_to_none=True)
        if self.sparse_opt is not None:
            self.sparse_opt.zero_grad(set_to_none=True)
        self.gen.set_state(gen)
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)

    def lr_at(self, step: int) -> float:
        """Warm-up then cosine to ``lr_min_ratio * lr`` (the reference's schedule)."""
        c = self.cfg
        if step < c.lr_warmup_steps:
            return c.lr * step / max(1, c.lr_warmup_steps)
        prog = (step - c.lr_warmup_steps) / max(1, c.steps - c.lr_warmup_steps)
        cos = 0.5 * (1 + math.cos(math.pi * prog))
        return c.lr * (c.lr_min_ratio + (1 - c.lr_min_ratio) * cos)

    def next_batch(self) -> dict:
        """Draw a random batch (drawn from the trainer's own generator: resumable)."""
        idx = torch.randint(len(self.inputs), (self.cfg.batch_size,), generator=self.gen)
        x, y = self.inputs[idx], self.labels[idx]
        if self.augment_fn is not None:
            seed = int(torch.randint(2 ** 31, (1,), generator=self.gen))
            x, y = self.augment_fn(x, y, np.random.default_rng(seed))
        d = self.device
        return {'inputs': x.to(d), 'labels': y.to(d), 'puzzle_identifiers':
                self.puzzle_ids[idx].to(d)}

    def train_step(self) -> dict:
        """One deep-supervision step; returns float metrics."""
        self.model.train()
        batch = self.next_batch()
        if self.carry is None:
            self.carry = self.model.initial_carry(batch)
        lr = self.lr_at(self.step)
        for g in self.opt.param_groups:
            g['lr'] = lr
        if self.sparse_opt is not None:
            for g in self.sparse_opt.param_groups:
                g['lr'] = self.cfg.puzzle_emb_lr * lr / self.cfg.lr
        self.carry, out = self._fwd(self.carry, batch)
        loss, metrics = act_loss(out, self.carry.current_data['labels'], self.carry.halted,
                                 self.cfg.loss)
        self.opt.zero_grad(set_to_none=True)
        if self.sparse_opt is not None:
            self.sparse_opt.zero_grad(set_to_none=True)
        (loss / self.cfg.batch_size).backward()
        self.opt.step()
        if self.sparse_opt is not None:
            self.sparse_opt.step()
        if self.ema is not None:
            with torch.no_grad():
                for pe, p in zip(self.ema.parameters(), self.model.parameters()):
                    pe.lerp_(p, 1 - self.cfg.ema)
        self.step += 1
        out = {k: float(v) for k, v in metrics.items()}
        out['loss'] = float(loss.detach()) / self.cfg.batch_size
        out['lr'] = lr
        return out

    def state_dict(self) -> dict:
        """Everything needed for an exact resume."""
        c = self.carry
        return {'model': self.model.state_dict(), 'opt': self.opt.state_dict(),
                'sparse_opt': self.sparse_opt.state_dict() if self.sparse_opt else None,
                'ema': self.ema.state_dict() if self.ema is not None else None,
                'step': self.step, 'gen': self.gen.get_state(),
                'torch_rng': torch.get_rng_state(),
                'cuda_rng': (torch.cuda.get_rng_state(self.device)
                             if self.device.type == 'cuda' else None),
                'carry': None if c is None else {'z_H': c.inner.z_H, 'z_L': c.inner.z_L,
                                                 'steps': c.steps, 'halted': c.halted,
                                                 'data': c.current_data},
                'model_config': self.model.config.to_dict(), 'train_config': asdict(self.cfg)}

    def load_state_dict(self, st: dict) -> None:
        """Restore from :meth:`state_dict`."""
        self.model.load_state_dict(st['model'])
        self.opt.load_state_dict(st['opt'])
        if self.sparse_opt is not None and st['sparse_opt'] is not None:
            self.sparse_opt.load_state_dict(st['sparse_opt'])
        if self.ema is not None and st['ema'] is not None:
            self.ema.load_state_dict(st['ema'])
        self.step = st['step']
        # RNG states are CPU byte tensors, whatever map_location moved them to
        self.gen.set_state(st['gen'].cpu())
        torch.set_rng_state(st['torch_rng'].cpu())
        if st.get('cuda_rng') is not None and self.device.type == 'cuda':
            # ACT exploration draws on the device's RNG (a CPU resume goes without it)
            torch.cuda.set_rng_state(st['cuda_rng'].cpu(), self.device)
        c = st['carry']
        self.carry = None if c is None else Carry(InnerCarry(c['z_H'], c['z_L']), c['steps'],
                                                  c['halted'], c['data'])

    def save(self, path: str) -> None:
        """Atomic checkpoint write (a kill mid-write leaves the previous file intact)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f'{path}.tmp{os.getpid()}'
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    def load(self, path: str) -> None:
        """Resume from a checkpoint file."""
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=False))

    def fit(self, ckpt: str | None = None, log=print, until_step: int | None = None,
            time_limit_s: float | None = None) -> dict:
        """Train to ``cfg.steps`` (or ``until_step``/time limit), checkpointing periodically."""
        t0, last = time.perf_counter(), {}
        end = min(self.cfg.steps, until_step or self.cfg.steps)
        agg: dict = {}
        while self.step < end:
            m = self.train_step()
            for k, v in m.items():
                agg[k] = agg.get(k, 0.0) + v
            if self.step % self.cfg.log_every == 0 or self.step == end:
                n = max(1.0, agg.get('count', 0))
                last = {'step': self.step, 'loss': agg['loss'] / self.cfg.log_every,
                        'exact': agg.get('exact', 0) / n, 'cell_acc': agg.get('accuracy', 0) / n,
                        'lr': m['lr'], 'elapsed_s': time.perf_counter() - t0}
                log(f"step {self.step}/{self.cfg.steps} loss {last['loss']:.4f} "
                    f"train_exact {last['exact']:.3f} cell {last['cell_acc']:.3f} "
                    f"lr {last['lr']:.2e} {last['elapsed_s']:.0f}s")
                agg = {}
            if ckpt and (self.step % self.cfg.checkpoint_every == 0 or self.step == end):
                self.save(ckpt)
            if time_limit_s is not None and time.perf_counter() - t0 > time_limit_s:
                if ckpt:
                    self.save(ckpt)
                break
        return last


@torch.no_grad()
def evaluate(model: HRM, inputs: np.ndarray, labels: np.ndarray, batch_size: int = 256,
             max_steps: int | None = None, puzzle_ids: np.ndarray | None = None,
             device: str = 'cpu') -> dict:
    """Exact match and cell accuracy, per segment (fixed segments) and with ACT halting.

    Returns ``exact``/``cell_acc`` with ACT halting, ``exact_by_segment`` and
    ``cell_by_segment`` (all samples run 1..max_steps segments), and ``steps_hist``
    (how many samples halted after k segments, k = 1..max_steps).
    """
    model.eval()
    steps_max = max_steps or model.config.halt_max_steps
    n = len(inputs)
    ex_seg = np.zeros(steps_max)
    cell_seg = np.zeros(steps_max)
    ex_act = cell_act = 0.0
    hist = np.zeros(steps_max, dtype=np.int64)
    for s in range(0, n, batch_size):
        x = torch.as_tensor(inputs[s:s + batch_size], dtype=torch.long, device=device)
        y = torch.as_tensor(labels[s:s + batch_size], dtype=torch.long, device=device)
        batch = {'inputs': x}
        if puzzle_ids is not None:
            batch['puzzle_identifiers'] = torch.as_tensor(puzzle_ids[s:s + batch_size],
                                                          device=device)
        elif model.config.puzzle_emb_ndim > 0:
            batch['puzzle_identifiers'] = torch.zeros(len(x), dtype=torch.long, device=device)
        inner = model.inner
        emb = model._input(batch)
        carry = inner.reset_carry(torch.ones(len(x), dtype=torch.bool, device=device),
                                  inner.empty_carry(len(x), emb.shape[1], device))
        halted = torch.zeros(len(x), dtype=torch.bool, device=device)
        act_pred = torch.zeros_like(y)
        mask = y != IGNORE
        for k in range(steps_max):
            carry, z_H, (qh, qc) = inner(carry, emb)
            pred = inner.lm_head(z_H)[:, inner.puzzle_emb_len:].argmax(-1)
            correct = (pred == y) & mask
            ex_seg[k] += float((correct.sum(-1) == mask.sum(-1)).sum())
            cell_seg[k] += float((correct.sum(-1) / mask.sum(-1).clamp_min(1)).sum())
            halt_now = ~halted & ((qh > qc) | (k == steps_max - 1))
            act_pred = torch.where(halt_now.unsqueeze(-1), pred, act_pred)
            hist[k] += int(halt_now.sum())
            halted |= halt_now
        correct = (act_pred == y) & mask
        ex_act += float((correct.sum(-1) == mask.sum(-1)).sum())
        cell_act += float((correct.sum(-1) / mask.sum(-1).clamp_min(1)).sum())
    return {'n': n, 'exact': ex_act / n, 'cell_acc': cell_act / n,
            'exact_by_segment': (ex_seg / n).tolist(), 'cell_by_segment': (cell_seg / n).tolist(),
            'steps_hist': hist.tolist(),
            'mean_steps': float((hist * np.arange(1, steps_max + 1)).sum() / max(1, n))}


def plot_by_segment(result: dict, path: str, title: str = 'HRM') -> str:
    """PNG of exact/cell accuracy against segments, with the ACT histogram."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    seg = np.arange(1, len(result['exact_by_segment']) + 1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(seg, result['exact_by_segment'], 'o-', label='exact match')
    a.plot(seg, result['cell_by_segment'], 's-', label='cell accuracy')
    a.axhline(result['exact'], ls='--', c='gray', label='exact, ACT halting')
    a.set_xlabel('segments')
    a.set_ylabel('accuracy')
    a.set_ylim(0, 1.02)
    a.legend()
    a.set_title(title)
    b.bar(seg, result['steps_hist'])
    b.set_xlabel('segments at halt (ACT)')
    b.set_ylabel('samples')
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
