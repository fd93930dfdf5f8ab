"""HRM on a GPU: the paper's Sudoku config, ours against sapientinc/HRM in the same run.

Run on the GPU machine from the repository root, with the reference copied (never
committed) to ``.ref/HRM``::

    python3 bench/hrm_gpu.py speed    --out DIR        # inference b1/b64/b768 + training
    python3 bench/hrm_gpu.py bound    --out DIR        # the GEMM + attention floor
    python3 bench/hrm_gpu.py accuracy --out DIR --data .ref/data/sudoku_hard_s0.npz
    python bench/hrm_gpu.py train-parity --data ...    # CPU: training step vs reference
    python bench/hrm_gpu.py merge DIRS...               # -> bench/results/hrm_gpu.json

The reference is imported as it is, with its flash-attn import answered by a stand-in
module whose ``flash_attn_func`` calls ``F.scaled_dot_product_attention`` (same layout and
arguments); its pydantic config needs pydantic (carried as wheels to the GPU host).

speed: both models bf16 with the same weights (the reference's state dict is loaded into
ours; outputs compared, one segment against the reference's own compiled-vs-eager noise
floor). Inference = 16 segments of a fresh batch (the reference's evaluation), timed with
CUDA events, median of repeats:

- reference: ``torch.compile(model, dynamic=False)`` (as its pretrain.py) called 16 times;
- ours: ``sage_hrm.gpu.GraphRunner``: weights cast to bf16 once, 16 segments in one
  CUDA graph, the segment through ``torch.compile`` (``--variants``: the runner's
  backends to time; the fastest that passed parity is reported as ours).

Training = one deep-supervision step at batch 768 (forward incl. the Q-target pass,
stablemax ACT loss, backward, fused AdamW), both compiled. FLOP/s use the issue's 219.9
GFLOP per puzzle (16 segments) and a bf16 matrix product measured in the same run.

accuracy: hard 9x9 Sudoku from ``sage_hrm.sudoku`` (>= 3 guesses; 1,000 train with
augmentation, 2,000 test), the same batches for ours, the reference and a plain
transformer of equal parameters (our blocks with H_cycles = L_cycles = 1 and one segment:
8 layers, no recurrence), each for the same wall-clock seconds of training on the GPU
(compilation excluded: a warm-up forward/backward without an update runs first), then
exact match and cell accuracy on the 2,000 test puzzles, and for ours the ACT step
distribution and batch-1 latency with halting on. One run per model and seed; a run keeps
its state in ``--state`` and carries on in the next call where the last one's time ran
out (the same next step), so the same command is repeated until every run is finished.
With several GPUs the runs are spread over them, one process per GPU.
"""

import argparse
import io
import json
import math
import os
import statistics
import subprocess
import sys
import time
import types

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, 'src', p) for p in ('sage_hrm', 'sage_common')]
GFLOP_PER_PUZZLE = 219.9
SEGMENTS = 16


# --------------------------------------------------------------------------- reference

def import_reference():
    """Import sapientinc/HRM from .ref/HRM with flash-attn answered by SDPA."""
    def flash_attn_func(q, k, v, causal=False, **_):
        # flash-attn layout [batch, seq, heads, head_dim]; same default scale
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), is_causal=causal)
        return out.transpose(1, 2)

    shim = types.ModuleType('flash_attn_interface')
    shim.flash_attn_func = flash_attn_func
    sys.modules.setdefault('flash_attn_interface', shim)
    sys.path.insert(0, os.path.join(ROOT, '.ref', 'HRM'))
    from models.hrm.hrm_act_v1 import HierarchicalReasoningModel_ACTV1 as RefHRM
    from models.losses import ACTLossHead
    return RefHRM, ACTLossHead


def ref_config(batch: int, puzzle_emb_ndim: int = 512, **kw) -> dict:
    """Return the paper's Sudoku config in the reference's terms."""
    return {**dict(batch_size=batch, seq_len=81, puzzle_emb_ndim=puzzle_emb_ndim,
                   num_puzzle_identifiers=1, vocab_size=11, H_cycles=2, L_cycles=2,
                   H_layers=4, L_layers=4, hidden_size=512, expansion=4, num_heads=8,
                   pos_encodings='rope', halt_max_steps=16, halt_exploration_prob=0.1,
                   forward_dtype='bfloat16'), **kw}


def to_ours(ref_state: dict) -> dict:
    """Map the reference's state dict onto sage_hrm.model.HRM names."""
    out = {}
    for k, v in ref_state.items():
        k = k.replace('embed_tokens.embedding_weight', 'embed_tokens')
        k = k.replace('puzzle_emb.weights', 'puzzle_emb.weight')
        if 'cos_cached' in k or 'sin_cached' in k or 'local_' in k:
            continue
        out[k] = v
    return out


def ref_solve(model, ids, pid, segments=SEGMENTS):
    """Run the reference's evaluation: ``segments`` calls of the ACT model."""
    batch = {'inputs': ids, 'puzzle_identifiers': pid, 'labels': torch.zeros_like(ids)}
    with torch.device(ids.device):
        carry = model.initial_carry(batch)
    for _ in range(segments):
        carry, out = model(carry=carry, batch=batch)
    return out['logits']


# --------------------------------------------------------------------------- helpers

def _time(fn, reps: int, warmup: int = 2) -> float:
    """Median milliseconds of ``fn`` over ``reps`` runs (CUDA events)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b))
    return statistics.median(out)


def peak_tflops() -> float:
    """Measured bf16 matrix-product rate (8192^3, random data), TFLOP/s."""
    a = torch.randn(8192, 8192, device='cuda', dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device='cuda', dtype=torch.bfloat16)
    ms = _time(lambda: a @ b, 10, 3)
    return 2 * 8192 ** 3 / ms / 1e9


def copy_bandwidth() -> float:
    """Measured device-to-device copy, TB/s counting bytes read and written."""
    a = torch.empty(2 ** 30, dtype=torch.uint8, device='cuda')
    b = torch.empty_like(a)
    ms = _time(lambda: b.copy_(a), 10, 3)
    return 2 * a.numel() / ms / 1e9


class Log:
    """Print and keep lines; write the partial JSON after every result."""

    def __init__(self, out: str, name: str):
        self.out, self.name, self.data = out, name, {'detail': {}, 'results': {}}
        os.makedirs(out, exist_ok=True)
        self.f = open(os.path.join(out, f'{name}.log'), 'a')

    def __call__(self, *a):
        s = ' '.join(str(x) for x in a)
        print(s, flush=True)
        self.f.write(s + '\n')
        self.f.flush()

    def save(self):
        with open(os.path.join(self.out, f'{self.name}.json'), 'w') as f:
            json.dump(self.data, f, indent=1)


def _guard(log, what, fn):
    """Run ``fn``; on an error log it and return None (the other parts still run)."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - a failed variant is reported, not fatal
        import traceback
        log(f'FAILED {what}: {type(e).__name__}: {e}')
        log(traceback.format_exc()[-3000:])
        log.data['detail'].setdefault('failures', {})[what] = f'{type(e).__name__}: {e}'
        return None


def _top_kernels(prof, n=12):
    rows = []
    for e in prof.key_averages():
        t = getattr(e, 'self_device_time_total', None) or getattr(e, 'self_cuda_time_total', 0)
        if t > 0:
            rows.append((e.key[:90], t / 1e3, e.count))
    rows.sort(key=lambda r: -r[1])
    total = sum(r[1] for r in rows)
    return {'total_ms': total, 'top': [{'kernel': k, 'ms': ms, 'pct': 100 * ms / total,
                                        'calls': c} for k, ms, c in rows[:n]]}


# --------------------------------------------------------------------------- speed

def build_pair(RefHRM):
    """The reference (paper config, seed 0) and ours with its weights, both eval, on CUDA."""
    from sage_hrm.model import HRM, HRMConfig
    torch.manual_seed(0)
    with torch.device('cuda'):
        ref = RefHRM(ref_config(64)).eval()
    ref_state = ref.state_dict()
    with torch.no_grad():  # non-zero puzzle embedding so that it is exercised
        ref_state['inner.puzzle_emb.weights'].normal_(0, 0.02)
    ref.load_state_dict(ref_state)
    ours = HRM(HRMConfig.sudoku_paper()).cuda().eval()
    missing = ours.load_state_dict(to_ours(ref_state), strict=False)
    assert not missing.unexpected_keys, missing
    assert all('rotary' in k for k in missing.missing_keys), missing
    return ref, ref_state, ours


def part_speed(a) -> int:
    from sage_hrm.gpu import GraphRunner
    from sage_hrm.model import HRM, HRMConfig
    from sage_hrm.train import act_loss
    log = Log(a.out, 'hrm_gpu_speed')
    det, res = log.data['detail'], log.data['results']
    t_start = time.time()
    RefHRM, ACTLossHead = import_reference()
    det.update(device=torch.cuda.get_device_name(), torch=torch.__version__)
    try:
        import triton
        det['triton'] = triton.__version__
    except Exception:
        pass
    det['peak_bf16_tflops_measured'] = peak = peak_tflops()
    det['copy_tb_s_measured'] = copy_bandwidth()
    log(f"peak bf16 {peak:.0f} TFLOP/s, copy {det['copy_tb_s_measured']:.2f} TB/s")
    ref, ref_state, ours = build_pair(RefHRM)
    ref_c = torch.compile(ref, dynamic=False)
    variants = [v for v in a.variants.split(',') if v]

    def runner(b, variant, segments=SEGMENTS):
        return GraphRunner(ours, b, backend=variant, segments=segments)

    # Same function: logits on the same random puzzles, 1 and 16 segments, each against a
    # float32 run of the reference (the exact function); ours must be as close to it as the
    # reference's own bf16 runs (eager and compiled) are.
    with torch.device('cuda'):
        ref32 = RefHRM(ref_config(64, forward_dtype='float32')).eval()
    ref32.load_state_dict(ref_state)
    ids = torch.randint(1, 11, (64, 81), device='cuda')
    pid = torch.zeros(64, dtype=torch.long, device='cuda')

    def rel(x, y):
        return float((x - y).norm() / y.norm())

    with torch.no_grad():
        for segs in (1, SEGMENTS):
            truth = ref_solve(ref32, ids, pid, segs).float()
            want = ref_solve(ref, ids, pid, segs).float()
            floor = ref_solve(ref_c, ids, pid, segs).float()
            row = {'rel_err_ref_eager_vs_fp32': rel(want, truth),
                   'rel_err_ref_compiled_vs_fp32': rel(floor, truth),
                   'rel_err_ref_compiled_vs_eager': rel(floor, want),
                   'argmax_agreement_ref_compiled_vs_eager':
                       float((floor.argmax(-1) == want.argmax(-1)).float().mean())}
            for v in variants:
                def par():
                    got = runner(64, v, segs)(ids, pid)['logits'].float()
                    return rel(got, truth), rel(got, want), \
                        float((got.argmax(-1) == want.argmax(-1)).float().mean())
                got = _guard(log, f'parity_{v}_{segs}seg', par)
                if got is not None:
                    (row[f'rel_err_{v}_vs_fp32'], row[f'rel_err_{v}_vs_ref_eager'],
                     row[f'argmax_agreement_{v}_vs_ref_eager']) = got
            det[f'parity_{segs}seg'] = row
            log(f'parity {segs} seg: {json.dumps(row)}')
            log.save()
    del ref32
    # a variant passes when, after one segment, it is as close to the float32 function as
    # the reference's own bf16 runs (within 25%)
    p1 = det['parity_1seg']
    bound = 1.25 * max(p1['rel_err_ref_eager_vs_fp32'], p1['rel_err_ref_compiled_vs_fp32'])
    ok = {v: p1.get(f'rel_err_{v}_vs_fp32', math.inf) <= bound for v in variants}
    det['parity_pass'] = ok
    log(f'parity pass: {ok}')

    for b in [int(x) for x in a.batches.split(',')]:
        if time.time() - t_start > a.deadline_s:
            log(f'b{b}: skipped (deadline)')
            continue
        ids = torch.randint(1, 11, (b, 81), device='cuda')
        pid = torch.zeros(b, dtype=torch.long, device='cuda')
        reps = 10 if b < 768 else 3
        row = {}
        with torch.no_grad():
            t0 = time.time()
            row['ms_ref'] = _time(lambda: ref_solve(ref_c, ids, pid), reps)
            row['setup_s_ref'] = time.time() - t0
            for v in variants:
                def tv():
                    t0 = time.time()
                    r = runner(b, v)
                    setup = time.time() - t0
                    ms = _time(lambda: r(ids, pid, sync=False), reps)
                    return ms, setup
                got = _guard(log, f'b{b}_{v}', tv)
                if got is not None:
                    row[f'ms_{v}'], row[f'setup_s_{v}'] = got
                torch.cuda.empty_cache()
        timed = {v: row[f'ms_{v}'] for v in variants if f'ms_{v}' in row and ok.get(v)}
        for v in variants:
            if f'ms_{v}' in row:
                row[f'speedup_{v}'] = row['ms_ref'] / row[f'ms_{v}']
        if timed:
            best = min(timed, key=timed.get)
            row.update(variant_ours=best, ms_ours=timed[best],
                       speedup=row['ms_ref'] / timed[best])
            for k in ['ref', 'ours']:
                row[f'puzzles_s_{k}'] = b * 1e3 / row[f'ms_{k}']
                row[f'pct_peak_{k}'] = row[f'puzzles_s_{k}'] * GFLOP_PER_PUZZLE / 1e3 / peak * 100
        res[f'b{b}'] = row
        log(f'b{b}: {json.dumps(row)}')
        log.save()

    if not a.skip_train and time.time() - t_start < a.deadline_s:
        def train():
            b = 768
            ids = torch.randint(1, 11, (b, 81), device='cuda')
            batch = {'inputs': ids, 'labels': torch.randint(1, 11, (b, 81), device='cuda'),
                     'puzzle_identifiers': torch.zeros(b, dtype=torch.long, device='cuda')}
            torch.manual_seed(0)
            with torch.device('cuda'):
                rmodel = ACTLossHead(RefHRM(ref_config(b)), 'stablemax_cross_entropy').train()
                rcarry = rmodel.initial_carry(batch)
            ropt = torch.optim.AdamW(rmodel.parameters(), lr=1e-4, fused=True)
            rstep_model = torch.compile(rmodel, dynamic=False)

            def ref_step():
                nonlocal rcarry
                rcarry, loss, _, _, _ = rstep_model(return_keys=[], carry=rcarry, batch=batch)
                (loss / b).backward()
                ropt.step()
                ropt.zero_grad(set_to_none=True)

            omodel = HRM(HRMConfig.sudoku_paper(puzzle_emb_ndim=0)).cuda().train()
            # both keep float32 master weights, cast to bf16 per use, as the reference does
            oopt = torch.optim.AdamW(omodel.parameters(), lr=1e-4, fused=True)
            obatch = {k: v for k, v in batch.items() if k != 'puzzle_identifiers'}
            ocarry = omodel.initial_carry(obatch)
            fwd = torch.compile(omodel, dynamic=False)

            def our_step():
                nonlocal ocarry
                ocarry, out = fwd(ocarry, obatch)
                loss, _ = act_loss(out, ocarry.current_data['labels'], ocarry.halted,
                                   'stablemax')
                (loss / b).backward()
                oopt.step()
                oopt.zero_grad(set_to_none=True)

            ms_rt = _time(ref_step, 5, 3)
            ms_ot = _time(our_step, 5, 3)
            return {'ms_ref': ms_rt, 'ms_ours': ms_ot, 'samples_s_ref': b * 1e3 / ms_rt,
                    'samples_s_ours': b * 1e3 / ms_ot, 'speedup': ms_rt / ms_ot,
                    'note': 'ours without the puzzle embedding (sparse grads do not '
                            'compile); reference with it'}
        got = _guard(log, 'train_b768', train)
        if got:
            res['train_b768'] = got
            log(f'train b768: {json.dumps(got)}')
    if a.profile and time.time() - t_start < a.deadline_s:
        def prof():
            from torch.profiler import ProfilerActivity, profile
            b = 768
            ids = torch.randint(1, 11, (b, 81), device='cuda')
            pid = torch.zeros(b, dtype=torch.long, device='cuda')
            out = {}
            with torch.no_grad():
                ref_solve(ref_c, ids, pid, 1)
                with profile(activities=[ProfilerActivity.CUDA]) as p:
                    ref_solve(ref_c, ids, pid, 1)
                out['reference'] = _top_kernels(p)
            return out
        got = _guard(log, 'profile', prof)
        if got:
            det['profile_b768_one_segment'] = got
            for k, v in got.items():
                log(f'profile {k}: total {v["total_ms"]:.1f} ms; ' + '; '.join(
                    f'{t["kernel"][:50]} {t["pct"]:.0f}%' for t in v['top'][:6]))
        log.save()
    torch.cuda.empty_cache()

    det['total_s'] = time.time() - t_start
    log.save()
    log(f"speed part done in {det['total_s']:.0f} s")
    return 0


# --------------------------------------------------------------------------- accuracy

def _is_cuda(dev) -> bool:
    return torch.device(dev).type == 'cuda'


def _sync(dev):
    if _is_cuda(dev):
        torch.cuda.synchronize()


def ref_evaluate(model, inputs, labels, batch_size=500, max_steps=SEGMENTS, dev='cuda'):
    """The reference model's evaluation, in the format of sage_hrm.train.evaluate."""
    model.eval()
    n = len(inputs)
    ex_seg, cell_seg = np.zeros(max_steps), np.zeros(max_steps)
    ex_act = cell_act = 0.0
    hist = np.zeros(max_steps, dtype=np.int64)
    with torch.no_grad():
        for s in range(0, n, batch_size):
            x = torch.as_tensor(inputs[s:s + batch_size], device=dev)
            y = torch.as_tensor(labels[s:s + batch_size], device=dev)
            batch = {'inputs': x, 'labels': y,
                     'puzzle_identifiers': torch.zeros(len(x), dtype=torch.long, device=dev)}
            with torch.device(dev):
                carry = model.initial_carry(batch)
            halted = torch.zeros(len(x), dtype=torch.bool, device=dev)
            act_pred = torch.zeros_like(y)
            for k in range(max_steps):
                carry, out = model(carry=carry, batch=batch)
                pred = out['logits'].argmax(-1)
                correct = pred == y
                ex_seg[k] += float(correct.all(-1).sum())
                cell_seg[k] += float(correct.float().mean(-1).sum())
                halt_now = ~halted & ((out['q_halt_logits'] > out['q_continue_logits'])
                                      | (k == max_steps - 1))
                act_pred = torch.where(halt_now[:, None], pred, act_pred)
                hist[k] += int(halt_now.sum())
                halted |= halt_now
            correct = act_pred == y
            ex_act += float(correct.all(-1).sum())
            cell_act += float(correct.float().mean(-1).sum())
    return {'n': n, 'exact': ex_act / n, 'cell_acc': cell_act / n,
            'exact_by_segment': (ex_seg / n).tolist(), 'cell_by_segment': (cell_seg / n).tolist(),
            'steps_hist': hist.tolist(),
            'mean_steps': float((hist * np.arange(1, max_steps + 1)).sum() / max(1, n))}


# Model sizes for the accuracy study: the paper's, and a tiny one for a CPU smoke test.
SIZES = {'paper': {}, 'tiny': dict(hidden_size=64, num_heads=2, H_layers=1, L_layers=1)}
MODELS = ('ours', 'reference', 'transformer', 'ours_same_init')
# the arguments a run's state depends on: a resume with others is refused
RUN_ARGS = ('seconds', 'batch_size', 'lr', 'warmup', 'size', 'no_compile', 'n_test', 'data')


class OursRun:
    """Ours (or the plain transformer) trained by sage_hrm.train.Trainer."""

    def __init__(self, mcfg, tc, tr_x, tr_y, dev, aug, eval_steps):
        from sage_hrm.train import Trainer
        self.trainer = Trainer(mcfg, tc, tr_x, tr_y, device=dev, augment_fn=aug)
        self.model, self.eval_steps, self.dev = self.trainer.model, eval_steps, dev

    @property
    def steps(self) -> int:
        return self.trainer.step

    def warmup(self):
        self.trainer.warmup()

    def step(self) -> dict:
        m = self.trainer.train_step()
        return {'loss': m['loss'], 'lr': m['lr'],
                'train_exact_batch': m['exact'] / max(1.0, m['count'])}

    def state_dict(self) -> dict:
        return self.trainer.state_dict()

    def load_state_dict(self, st: dict):
        self.trainer.load_state_dict(st)

    def evaluate(self, te_x, te_y) -> dict:
        from sage_hrm.train import evaluate
        return evaluate(self.model, te_x, te_y, batch_size=500, max_steps=self.eval_steps,
                        device=self.dev)


class ReferenceRun:
    """sapientinc/HRM (compiled) trained on the same batches as ours: the same sampler."""

    def __init__(self, a, tc, tr_x, tr_y, aug):
        from sage_hrm.train import Trainer
        RefHRM, ACTLossHead = import_reference()
        self.tc, self.dev = tc, a.device
        # the same sampler (and so the same batches) as our Trainer: borrow its next_batch
        s = self.sampler = Trainer.__new__(Trainer)
        s.cfg, s.device, s.augment_fn = tc, torch.device(a.device), aug
        s.inputs = torch.as_tensor(tr_x, dtype=torch.long)
        s.labels = torch.as_tensor(tr_y, dtype=torch.long)
        s.puzzle_ids = torch.zeros(len(tr_x), dtype=torch.long)
        s.gen = torch.Generator().manual_seed(tc.seed)
        self.lr_at = lambda step: Trainer.lr_at(s, step)
        torch.manual_seed(tc.seed)
        with torch.device(a.device):
            self.loss_head = ACTLossHead(
                RefHRM(ref_config(tc.batch_size, puzzle_emb_ndim=0, **SIZES[a.size])),
                'stablemax_cross_entropy').train()
        self.model = self.loss_head.model
        self.opt = torch.optim.AdamW(self.loss_head.parameters(), lr=tc.lr, betas=tc.betas,
                                     weight_decay=tc.weight_decay)
        self.fwd = (self.loss_head if a.no_compile
                    else torch.compile(self.loss_head, dynamic=False))
        self.carry, self.steps = None, 0

    def _rng(self, state=None):
        """Get (or with ``state`` set) the sampler's and torch's RNG states."""
        cuda = _is_cuda(self.dev)
        if state is None:
            return {'gen': self.sampler.gen.get_state(), 'torch': torch.get_rng_state(),
                    'cuda': torch.cuda.get_rng_state() if cuda else None}
        self.sampler.gen.set_state(state['gen'].cpu())   # map_location may have moved them
        torch.set_rng_state(state['torch'].cpu())
        if cuda and state['cuda'] is not None:
            torch.cuda.set_rng_state(state['cuda'].cpu())

    def step(self, update: bool = True) -> dict:
        batch = self.sampler.next_batch()
        carry = self.carry
        if carry is None:
            with torch.device(self.dev):
                carry = self.loss_head.initial_carry(batch)
        lr = self.lr_at(self.steps)
        for g in self.opt.param_groups:
            g['lr'] = lr
        new_carry, loss, metrics, _, _ = self.fwd(return_keys=[], carry=carry, batch=batch)
        (loss / self.tc.batch_size).backward()
        if update:
            self.carry = new_carry
            self.opt.step()
            self.steps += 1
        self.opt.zero_grad(set_to_none=True)
        return {'loss': float(loss.detach()) / self.tc.batch_size, 'lr': lr,
                'train_exact_batch': float(metrics['exact_accuracy'])
                / max(1.0, float(metrics['count']))}

    def warmup(self):
        """Compile with one step that changes nothing: no update, RNG states restored."""
        rng = self._rng()
        self.step(update=False)
        self._rng(rng)

    def state_dict(self) -> dict:
        return {'model': self.loss_head.state_dict(), 'opt': self.opt.state_dict(),
                'carry': self.carry, 'steps': self.steps, 'rng': self._rng()}

    def load_state_dict(self, st: dict):
        self.loss_head.load_state_dict(st['model'])
        self.opt.load_state_dict(st['opt'])
        self.carry, self.steps = st['carry'], st['steps']
        self._rng(st['rng'])

    def evaluate(self, te_x, te_y) -> dict:
        return ref_evaluate(self.model, te_x, te_y, dev=self.dev)


def load_data(a):
    """Load the study's puzzles as tokens (``--n-test`` keeps the first test puzzles only)."""
    from sage_hrm import sudoku as S
    d = np.load(a.data)
    n_test = a.n_test or len(d['test_x'])
    return {'d': d, 'tr_x': S.to_tokens(d['train_x']), 'tr_y': S.to_tokens(d['train_y']),
            'te_x': S.to_tokens(d['test_x'][:n_test]), 'te_y': S.to_tokens(d['test_y'][:n_test])}


def make_run(a, name, seed, data):
    """Build the training run of model ``name`` with ``seed`` (the same batches for all)."""
    from sage_hrm import sudoku as S
    from sage_hrm.model import HRMConfig
    from sage_hrm.train import TrainConfig

    def aug(x, y, rng):
        return S.augment_tokens(x, y, torch.Generator().manual_seed(int(rng.integers(2 ** 62))))

    tc = TrainConfig(batch_size=a.batch_size, steps=10 ** 7, lr=a.lr, lr_warmup_steps=a.warmup,
                     lr_min_ratio=1.0, weight_decay=1.0, betas=(0.9, 0.95), loss='stablemax',
                     seed=seed, augment=True, compile=not a.no_compile)
    torch.manual_seed(seed)
    size = SIZES[a.size]
    if name == 'reference':
        return ReferenceRun(a, tc, data['tr_x'], data['tr_y'], aug)
    if name in ('ours', 'ours_same_init'):
        cfg, eval_steps = HRMConfig.sudoku_paper(puzzle_emb_ndim=0, **size), SEGMENTS
    else:   # the plain transformer: the same blocks once, no recurrence, one segment
        cfg = HRMConfig.sudoku_paper(puzzle_emb_ndim=0, H_cycles=1, L_cycles=1,
                                     halt_max_steps=1, **size)
        eval_steps = 1
    init = reference_init(a, seed) if name == 'ours_same_init' else None
    run = OursRun(cfg, tc, data['tr_x'], data['tr_y'], a.device, aug, eval_steps)
    if init is not None:
        load_reference_init(run.trainer, init)
    return run


def reference_init(a, seed: int) -> dict:
    """The initial weights of the reference run with ``seed`` (the same draws as ReferenceRun)."""
    RefHRM, _ = import_reference()
    torch.manual_seed(seed)
    with torch.device(a.device):
        ref = RefHRM(ref_config(a.batch_size, puzzle_emb_ndim=0, **SIZES[a.size]))
    return {k: v.detach().clone() for k, v in ref.state_dict().items()}


def load_reference_init(trainer, ref_state: dict) -> None:
    """Start our Trainer's model (and its EMA copy) from the reference's weights."""
    missing = trainer.model.load_state_dict(to_ours(ref_state), strict=False)
    assert not missing.unexpected_keys, missing
    assert all('rotary' in k for k in missing.missing_keys), missing
    if trainer.ema is not None:
        trainer.ema.load_state_dict(trainer.model.state_dict())


def _atomic(path, write):
    tmp = f'{path}.tmp{os.getpid()}'
    write(tmp)
    os.replace(tmp, path)


def run_job(a, log, name, seed, data, t_end):
    """Train ``name``/``seed`` on until it has had ``a.seconds`` of training, resuming.

    The run's state (weights, optimizer, ACT carry, sampler and RNG states, seconds spent)
    is saved in ``a.state`` every ``a.save_every`` seconds and when the call's time is up,
    so the next call carries on with the same next step. Returns the evaluation once the
    run has had its seconds (also written as ``NAME_sSEED.json`` beside the state), else
    None.
    """
    dev = a.device
    stem = os.path.join(a.state, f'{name}_s{seed}')
    args = {k: getattr(a, k) for k in RUN_ARGS}

    def same_args(saved, what):
        if saved.get('args', args) != args:
            raise ValueError(f'{what} was made with {saved["args"]}, this call has {args}: '
                             f'repeat the first call\'s arguments or use another --state')
    if os.path.exists(stem + '.json'):
        with open(stem + '.json') as f:
            r = json.load(f)
        same_args(r, stem + '.json')
        return r
    run = make_run(a, name, seed, data)
    info = {'spent_s': 0.0, 'compile_s': 0.0, 'calls': 0, 'args': args}
    if os.path.exists(stem + '.pt'):
        st = torch.load(stem + '.pt', map_location=dev, weights_only=False)
        same_args(st['info'], stem + '.pt')
        run.load_state_dict(st['run'])
        info = st['info']
        log(f'{name} seed {seed}: resumed at step {run.steps} '
            f'({info["spent_s"]:.0f} of {a.seconds:.0f} s)')
    info['calls'] += 1
    t0 = time.time()
    run.warmup()
    _sync(dev)
    info['compile_s'] += time.time() - t0

    def save():
        _atomic(stem + '.pt', lambda p: torch.save({'run': run.state_dict(), 'info': info}, p))

    saved = time.time()
    while info['spent_s'] < a.seconds and time.time() < t_end:
        t0 = time.perf_counter()
        m = run.step()                  # returns floats: the step has finished on the device
        info['spent_s'] += time.perf_counter() - t0
        if run.steps % 100 == 0:
            info['last_log'] = m
            log(f'{name} seed {seed} step {run.steps} {json.dumps(m)} {info["spent_s"]:.0f}s')
        if time.time() - saved > a.save_every:
            save()
            saved = time.time()
    save()
    if info['spent_s'] < a.seconds:
        log(f'{name} seed {seed}: {info["spent_s"]:.0f} of {a.seconds:.0f} s trained when the '
            f'call ran out of time; state saved in {stem}.pt, run again to resume')
        return None
    t0 = time.time()
    ev = run.evaluate(data['te_x'], data['te_y'])
    r = {'seed': seed, 'args': args, 'steps': run.steps, 'train_s': info['spent_s'],
         'compile_s': info['compile_s'], 'calls': info['calls'],
         'samples_seen': run.steps * a.batch_size, 'eval_s': time.time() - t0,
         'params': sum(p.numel() for p in run.model.parameters()),
         'last_log': info.get('last_log', {}), **ev}
    if name == 'ours' and a.act_puzzles:      # (~30 s; the result is written only once)
        r['act_b1'] = _guard(log, 'act_b1', lambda: act_latency(
            run.model.eval(), data['te_x'], data['te_y'], a, dev))

    def write(p):
        with open(p, 'w') as f:
            json.dump(r, f, indent=1)
    _atomic(stem + '.json', write)
    log(f"{name} seed {seed}: {r['steps']} steps in {r['train_s']:.0f} s over {r['calls']} "
        f"call(s), exact {r['exact_by_segment'][-1]:.4f} cell {r['cell_by_segment'][-1]:.4f} "
        f"(ACT: exact {r['exact']:.4f}, mean steps {r['mean_steps']:.2f})")
    return r


def aggregate(runs: list) -> dict:
    """Mean (and spread when there are several seeds) of one model's finished runs."""
    out = {'seeds': [r['seed'] for r in runs], 'runs': runs}
    for k in ('exact', 'cell_acc', 'mean_steps', 'steps', 'samples_seen', 'train_s'):
        vals = [r[k] for r in runs]
        out[k] = statistics.mean(vals)
        if len(vals) > 1:
            out[k + '_std'] = statistics.stdev(vals)
    for k in ('exact_by_segment', 'cell_by_segment'):
        out[k] = np.mean([r[k] for r in runs], axis=0).tolist()
    out['steps_hist'] = np.sum([r['steps_hist'] for r in runs], axis=0).tolist()
    out['exact_last_by_seed'] = [r['exact_by_segment'][-1] for r in runs]
    out['cell_last_by_seed'] = [r['cell_by_segment'][-1] for r in runs]
    out['params'] = runs[0]['params']
    return out


def part_accuracy(a) -> int:
    log = Log(a.out, 'hrm_gpu_accuracy')
    det, res = log.data['detail'], log.data['results']
    t_start = time.time()
    t_end = t_start + a.deadline_s
    dev = a.device
    os.makedirs(a.state, exist_ok=True)
    jobs = [(m, int(s)) for s in a.seeds.split(',') if s for m in a.models.split(',') if m]
    bad = [m for m, _ in jobs if m not in MODELS]
    if bad:
        log(f'unknown model {bad[0]!r}: choose from {", ".join(MODELS)}')
        return 2
    if a.jobs:                                  # a worker of a multi-GPU run
        jobs = [(j.split(':')[0], int(j.split(':')[1])) for j in a.jobs.split(',')]
    data = load_data(a)
    gpus = a.gpus or (torch.cuda.device_count() if _is_cuda(dev) else 1)
    if gpus > 1 and not a.jobs:
        # one worker process per GPU, each with its share of the runs
        # (this process's own GPU list, if it has one; the extra part runs here, once)
        visible = os.environ.get('CUDA_VISIBLE_DEVICES', ','.join(map(str, range(gpus))))
        visible = visible.split(',')
        if gpus > len(visible):
            log(f'--gpus {gpus}: only {len(visible)} visible; using {len(visible)}')
            gpus = len(visible)
        argv = [x for x in sys.argv[1:] if x != '--extra']
        procs = []
        for i in range(gpus):
            mine = jobs[i::gpus]
            if mine:
                cmd = [sys.executable, os.path.abspath(__file__), *argv, '--gpus', '1',
                       '--jobs', ','.join(f'{m}:{s}' for m, s in mine),
                       '--out', os.path.join(a.out, f'gpu{i}')]
                env = dict(os.environ, CUDA_VISIBLE_DEVICES=visible[i])
                procs.append(subprocess.Popen(cmd, env=env))
        codes = [p.wait() for p in procs]
        log(f'{len(procs)} GPU workers exited with {codes}')
        failed = any(codes)
        done = {}
        for m, s in jobs:
            p = os.path.join(a.state, f'{m}_s{s}.json')
            if os.path.exists(p):
                with open(p) as f:
                    done[(m, s)] = json.load(f)
    else:
        done, failed = {}, False
        for m, s in jobs:
            if time.time() > t_end - a.min_job_s and not os.path.exists(
                    os.path.join(a.state, f'{m}_s{s}.json')):
                log(f'{m} seed {s}: not started, less than {a.min_job_s:.0f} s left in this call')
                continue
            r = _guard(log, f'accuracy_{m}_s{s}', lambda: run_job(a, log, m, s, data, t_end))
            if r is not None:
                done[(m, s)] = r
            if _is_cuda(dev):
                torch.cuda.empty_cache()
    d = data['d']
    det.update(device=torch.cuda.get_device_name() if _is_cuda(dev) else dev,
               torch=torch.__version__, size=a.size, n_train=len(d['train_x']),
               n_test=a.n_test or len(d['test_x']),
               min_guesses_train=int(d['train_g'].min()),
               min_guesses_test=int(d['test_g'].min()),
               median_guesses_test=float(np.median(d['test_g'])),
               train_seconds_each=a.seconds, batch_size=a.batch_size, lr=a.lr,
               warmup=a.warmup, weight_decay=1.0, betas=[0.9, 0.95], loss='stablemax',
               optimizer='AdamW for all three (the reference ships AdamATan2)',
               augmentation='digit permutation, band/stack and row/column-in-band '
                            'permutations, transpose (sage_hrm.sudoku.augment_tokens)',
               lr_schedule='linear warm-up, then constant (lr_min_ratio 1.0, as the paper)',
               jobs=[f'{m}:{s}' for m, s in jobs],
               finished=[f'{m}:{s}' for m, s in done], gpus=gpus)
    for m in dict.fromkeys(m for m, _ in jobs):
        runs = [done[j] for j in jobs if j[0] == m and j in done]
        if runs:
            res[m] = aggregate(runs)
    if a.extra and _is_cuda(dev) and time.time() < t_end:
        extra(a, log, t_start)
    det['total_s'] = time.time() - t_start
    log.save()
    left = [f'{m}:{s}' for m, s in jobs if (m, s) not in done]
    failed = failed or 'failures' in det
    log(f"accuracy part: {len(done)} of {len(jobs)} runs finished in {det['total_s']:.0f} s"
        + (f'; unfinished {", ".join(left)}' if left else '')
        + ('; some failed (above)' if failed else
           ': run the same command again' if left else ''))
    return 1 if failed else 0


def extra(a, log, t_start):
    """Batch sizes again on this call's machine (inductor default and max-autotune)."""
    res = log.data['results']
    torch.cuda.empty_cache()
    RefHRM, _ = import_reference()
    ref, ref_state, ours = build_pair(RefHRM)
    for b in [int(x) for x in a.extra_batches.split(',') if x]:
        if time.time() - t_start > a.deadline_s:
            log(f'extra b{b}: skipped (deadline)')
            continue
        r = _guard(log, f'extra_b{b}', lambda: extra_batch(RefHRM, ref, ref_state, ours, b))
        if r is not None:
            res[f'speed_b{b}'] = r
            log(f'extra b{b}: {json.dumps(r)}')
        log.save()


def extra_batch(RefHRM, ref, ref_state, ours, b):
    """Batch ``b`` again, reference beside ours with inductor default and max-autotune."""
    from sage_hrm.gpu import GraphRunner
    ids = torch.randint(1, 11, (b, 81), device='cuda')
    pid = torch.zeros(b, dtype=torch.long, device='cuda')
    row = {}
    with torch.no_grad():
        with torch.device('cuda'):
            ref32 = RefHRM(ref_config(b, forward_dtype='float32')).eval()
        ref32.load_state_dict(ref_state)
        truth = ref_solve(ref32, ids, pid, 1).float()
        del ref32
        ref_c = torch.compile(ref, dynamic=False)
        for name, m in (('ref_eager', ref), ('ref', ref_c)):
            got = ref_solve(m, ids, pid, 1).float()
            row[f'rel_err_1seg_{name}_vs_fp32'] = float((got - truth).norm() / truth.norm())
        row['ms_ref'] = _time(lambda: ref_solve(ref_c, ids, pid), 10)
        for name, mode in (('inductor', None),
                           ('inductor_max_autotune', 'max-autotune-no-cudagraphs')):
            t0 = time.time()
            r1 = GraphRunner(ours, b, backend='inductor', compile_mode=mode, segments=1)
            got = r1(ids, pid)['logits'].float()
            row[f'rel_err_1seg_{name}_vs_fp32'] = float((got - truth).norm() / truth.norm())
            del r1
            r = GraphRunner(ours, b, backend='inductor', compile_mode=mode)
            row[f'setup_s_{name}'] = time.time() - t0
            row[f'ms_{name}'] = _time(lambda: r(ids, pid, sync=False), 10)
            row[f'speedup_{name}'] = row['ms_ref'] / row[f'ms_{name}']
            torch.cuda.empty_cache()
    return row


def act_latency(model, te_x, te_y, a, dev):
    """ACT halting on, batch 1 (GraphRunner, auto backend): steps and latency per puzzle."""
    from sage_hrm.gpu import GraphRunner
    rn = GraphRunner(model, 1, halting=True, device=dev)
    rf = GraphRunner(model, 1, halting=False, device=dev)
    lat, lat_fixed, steps, right, right16 = [], [], [], 0, 0
    k = min(a.act_puzzles, len(te_x))
    for i in range(k):
        x = torch.as_tensor(te_x[i:i + 1], device=dev)
        _sync(dev)
        t0 = time.perf_counter()
        o = rn(x)                                  # returns after the device finished
        lat.append((time.perf_counter() - t0) * 1e3)
        steps.append(int(o['steps'][0]))
        right += int(bool((o['logits'].argmax(-1).cpu().numpy() == te_y[i]).all()))
        t0 = time.perf_counter()
        o = rf(x)
        lat_fixed.append((time.perf_counter() - t0) * 1e3)
        right16 += int(bool((o['logits'].argmax(-1).cpu().numpy() == te_y[i]).all()))
    return {'puzzles': k, 'backend': rn.backend,
            'steps_hist': np.bincount(steps, minlength=SEGMENTS + 1)[1:].tolist(),
            'mean_steps': float(np.mean(steps)), 'exact_act': right / k,
            'exact_fixed16': right16 / k,
            'latency_ms_p50': float(np.median(lat)),
            'latency_ms_p90': float(np.percentile(lat, 90)),
            'latency_ms_mean': float(np.mean(lat)),
            'fixed16_latency_ms_p50': float(np.median(lat_fixed)),
            'fixed16_latency_ms_mean': float(np.mean(lat_fixed))}


# --------------------------------------------------------------------------- merge

def part_merge(a) -> int:
    """Combine the parts' JSON into bench/results/hrm_gpu.json (summary names kept)."""
    parts = {'speed': [], 'accuracy': [], 'train_parity': [], 'bound': []}
    for d in a.dirs:
        for name in parts:
            p = os.path.join(d, f'hrm_gpu_{name}.json')
            if os.path.exists(p):
                with open(p) as f:
                    parts[name].append(json.load(f))
    # the first of each part is the main one; later speed parts are reruns on other machines
    speed, acc, tpar, bound = ({} if not v else v[0] for v in parts.values())
    res = dict(speed.get('results', {}))
    for i, sp in enumerate(parts['speed'][1:], start=1):
        for k, v in sp.get('results', {}).items():
            res[f'{k}_rerun{i}'] = v
    ares = {k: aggregate(v['runs']) if 'runs' in v else v      # (older parts: one run)
            for k, v in acc.get('results', {}).items() if not k.startswith('speed_')}
    for ac in parts['accuracy']:
        for k, v in ac.get('results', {}).items():
            if k.startswith('speed_'):   # the same batch again, on that call's machine
                res.setdefault(k.replace('speed_', '') + '_second_machine', v)

    def get(k, f):
        return res.get(k, {}).get(f)

    def last(k, f):
        return ares[k][f][-1] if k in ares else None

    summary = {'speedup_b1_vs_reference': get('b1', 'speedup'),
               'speedup_b64_vs_reference': get('b64', 'speedup'),
               'speedup_b768_vs_reference': get('b768', 'speedup'),
               'train_speedup_vs_reference': get('train_b768', 'speedup'),
               'pct_peak_b768': get('b768', 'pct_peak_ours'),
               'sudoku_exact_ours': last('ours', 'exact_by_segment'),
               'sudoku_exact_reference': last('reference', 'exact_by_segment'),
               'sudoku_exact_transformer': last('transformer', 'exact_by_segment'),
               'sudoku_cell_ours': last('ours', 'cell_by_segment'),
               'sudoku_cell_reference': last('reference', 'cell_by_segment'),
               'sudoku_cell_transformer': last('transformer', 'cell_by_segment'),
               'speedup_b1_vs_reference_second_machine':
                   get('b1_second_machine', 'speedup_inductor'),
               'speedup_b1_vs_reference_rerun1': get('b1_rerun1', 'speedup'),
               'act_mean_steps_ours': ares.get('ours', {}).get('mean_steps'),
               'train_parity_loss_rel_diff': tpar.get('summary', {}).get('loss_rel_diff'),
               'train_parity_grad_rel_diff': tpar.get('summary', {}).get('grad_rel_diff'),
               'accuracy_runs_resume_exact': tpar.get('summary', {}).get('resume_exact')}
    # the same-init study: ours from the reference's initial weights, beside the reference
    # trained in the same call (a part of its own, the one holding 'ours_same_init')
    same = next((ac['results'] for ac in parts['accuracy']
                 if 'ours_same_init' in ac.get('results', {})), {})
    same_init = {k: aggregate(v['runs']) for k, v in same.items() if 'runs' in v}
    for m, key in (('ours_same_init', 'ours'), ('reference', 'reference')):
        if m in same_init:
            summary[f'sudoku_exact_{key}_same_init'] = same_init[m]['exact_by_segment'][-1]
            summary[f'sudoku_cell_{key}_same_init'] = same_init[m]['cell_by_segment'][-1]
    # the most any implementation could gain with the GEMMs and attention at cuBLAS/cuDNN
    # rate and all pointwise work free (part 'bound')
    for k in ('b1', 'b64', 'b768', 'train_b768'):
        summary[f'max_speedup_{k}_gemm_floor'] = bound.get('results', {}).get(k, {}).get(
            'max_speedup')
    for m in MODELS:             # training seconds per run, seeds, spread over seeds
        if m in ares:
            summary[f'sudoku_train_s_{m}'] = ares[m].get('train_s')
            by_seed = ares[m].get('exact_last_by_seed', [])
            summary[f'sudoku_seeds_{m}'] = len(by_seed) or 1
            if len(by_seed) > 1:
                summary[f'sudoku_exact_{m}_std'] = statistics.stdev(by_seed)
                summary[f'sudoku_cell_{m}_std'] = statistics.stdev(ares[m]['cell_last_by_seed'])
    out = {'summary': summary, 'results': res, 'accuracy': ares, 'same_init': same_init,
           'detail': {'speed': speed.get('detail', {}), 'accuracy': acc.get('detail', {}),
                      'train_parity': tpar},
           'bound': bound}
    path = os.path.join(ROOT, 'bench', 'results', 'hrm_gpu.json')
    with open(path, 'w') as f:
        json.dump(out, f, indent=1)
    if ares:
        plot_accuracy(ares, acc.get('detail', {}), path.replace('.json', '_accuracy.png'))
    print(json.dumps(summary, indent=1))
    return 0


def plot_accuracy(ares: dict, det: dict, path: str) -> None:
    """Exact and cell accuracy against segments for each model; ACT halting steps."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ex, ce, st) = plt.subplots(1, 3, figsize=(13, 3.8))
    for name, r in ares.items():
        seg = np.arange(1, len(r['exact_by_segment']) + 1)
        style = 'o-' if len(seg) > 1 else 's'
        ex.plot(seg, r['exact_by_segment'], style, label=name)
        ce.plot(seg, r['cell_by_segment'], style, label=name)
        if len(seg) > 1:
            st.plot(seg, r['steps_hist'], 'o-', label=name)
    for axis, what in ((ex, 'exact match (whole puzzle)'), (ce, 'cell accuracy')):
        axis.set_xlabel('segments')
        axis.set_ylabel(what)
        axis.set_ylim(0, 1.0)
        axis.legend()
    st.set_xlabel('segment at which ACT halts')
    st.set_ylabel('test puzzles')
    st.legend()
    fig.suptitle(f"hard 9x9 Sudoku, {det.get('n_test', '?')} test puzzles, "
                 f"{det.get('train_seconds_each', '?')} s of training each on one "
                 f"{det.get('device', 'GPU')}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def resume_check(a) -> dict:
    """Save each accuracy-study run after 3 steps, resume it, compare the next 3 losses."""
    args = types.SimpleNamespace(batch_size=8, lr=1e-3, warmup=2, no_compile=True,
                                 size='tiny', device=a.device, data=a.data, n_test=10)
    data, out = load_data(args), {}
    for name in MODELS:
        run = make_run(args, name, 0, data)
        run.warmup()
        for _ in range(3):
            run.step()
        buf = io.BytesIO()
        torch.save(run.state_dict(), buf)
        expect = [run.step()['loss'] for _ in range(3)]
        torch.manual_seed(123)              # whatever RNG state a new process has
        again = make_run(args, name, 0, data)
        buf.seek(0)
        again.load_state_dict(torch.load(buf, weights_only=False))
        again.warmup()                      # as run_job does after loading
        got = [again.step()['loss'] for _ in range(3)]
        out[name] = {'same': got == expect, 'expect': expect, 'got': got}
        print(f'resume {name}: {json.dumps(out[name])}', flush=True)
    return out


def part_train_parity(a) -> int:
    """Our training step against the reference's (same weights, same batch, float32).

    Deep-supervision steps (the carry carried on, exploration off so that both halt
    alike) of the paper's architecture at a small size; compares the ACT loss and every
    parameter's gradient. Then :func:`resume_check`. Runs on the CPU in seconds.
    """
    from sage_hrm import sudoku as S
    from sage_hrm.model import HRM, HRMConfig
    from sage_hrm.train import act_loss
    RefHRM, ACTLossHead = import_reference()
    kw = dict(hidden_size=128, num_heads=4, H_layers=2, L_layers=2, forward_dtype='float32',
              halt_exploration_prob=0.0)
    torch.manual_seed(0)
    with torch.device(a.device):
        ref = ACTLossHead(RefHRM(ref_config(a.batch_size, puzzle_emb_ndim=0, **kw)),
                          'stablemax_cross_entropy').train()
        ours = HRM(HRMConfig.sudoku_paper(puzzle_emb_ndim=0, **kw)).train()
    missing = ours.load_state_dict(to_ours({k.removeprefix('model.'): v
                                            for k, v in ref.state_dict().items()}), strict=False)
    assert not missing.unexpected_keys, missing
    assert all('rotary' in k for k in missing.missing_keys), missing   # (computed tables)
    ref_names = list(to_ours({k.removeprefix('model.'): p for k, p in ref.named_parameters()}))
    assert ref_names == [k for k, _ in ours.named_parameters()]   # gradients paired by name
    d = np.load(a.data)
    n = a.batch_size
    batch = {k: torch.as_tensor(v, device=a.device) for k, v in (
        ('inputs', S.to_tokens(d['train_x'][:n])), ('labels', S.to_tokens(d['train_y'][:n])),
        ('puzzle_identifiers', np.zeros(n, dtype=np.int64)))}
    with torch.device(a.device):
        rc, oc = ref.initial_carry(batch), ours.initial_carry(batch)
    steps = []
    for _ in range(a.steps):
        rc, r_loss, _, _, _ = ref(return_keys=[], carry=rc, batch=batch)
        oc, out = ours(oc, batch)
        o_loss, _ = act_loss(out, oc.current_data['labels'], oc.halted, 'stablemax')
        ref.zero_grad()
        ours.zero_grad()
        r_loss.backward()
        o_loss.backward()
        grads = [float((p.grad - q.grad).norm() / p.grad.norm().clamp_min(1e-30))
                 for p, q in zip(ref.parameters(), ours.parameters()) if p.grad is not None]
        r_loss, o_loss = float(r_loss.detach()), float(o_loss.detach())
        steps.append({'loss_ref': r_loss, 'loss_ours': o_loss,
                      'loss_rel_diff': abs(r_loss - o_loss) / abs(r_loss),
                      'grad_rel_diff_max': max(grads), 'grads_compared': len(grads)})
        print(json.dumps(steps[-1]))
    out = {'summary': {'loss_rel_diff': max(s['loss_rel_diff'] for s in steps),
                       'grad_rel_diff': max(s['grad_rel_diff_max'] for s in steps)},
           'steps': steps, 'config': kw, 'batch_size': n, 'device': a.device,
           'resume': resume_check(a)}
    out['summary']['resume_exact'] = all(r['same'] for r in out['resume'].values())
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, 'hrm_gpu_train_parity.json'), 'w') as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out['summary']))
    return 0


def part_bound(a) -> int:
    """Time the work no implementation can skip: a block's four GEMMs and its attention.

    For each batch, the paper block's matrix products (qkv, o, gate/up, down) and SDPA,
    each on its own inputs, captured in a CUDA graph of ``reps`` blocks; 16 segments of 24
    blocks of that is the floor under any implementation whose pointwise work (RMSNorm,
    SwiGLU, RoPE, residual adds) were free. Training: 40 blocks without gradients (16 of
    the segment, 24 of the Q-target pass) and 8 forward+backward (the last L and H calls).
    Against the reference's and our measured times (``--speed``), the floor bounds the
    speedup any fused kernel could reach while the GEMMs run at cuBLAS's rate.
    """
    dev, dt, T, d, heads, inter = 'cuda', torch.bfloat16, 82, 512, 8, 1536
    with open(a.speed) as f:
        speed = json.load(f)['results']
    g = torch.Generator(device=dev).manual_seed(0)
    peak = peak_tflops()

    def rnd(*shape, grad=False):
        return torch.randn(*shape, device=dev, dtype=dt, generator=g).requires_grad_(grad)

    def block_ops(b, grad):
        m = b * T
        xs = [rnd(m, d, grad=grad), rnd(m, d, grad=grad), rnd(m, d, grad=grad),
              rnd(m, inter, grad=grad)]
        ws = [rnd(3 * d, d, grad=grad), rnd(d, d, grad=grad), rnd(2 * inter, d, grad=grad),
              rnd(d, inter, grad=grad)]
        q, k, v = (rnd(b, heads, T, d // heads, grad=grad) for _ in range(3))

        def run():
            outs = [F.linear(x, w) for x, w in zip(xs, ws)]
            outs.append(F.scaled_dot_product_attention(q, k, v))
            if grad:
                torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
        return run

    def per_block_ms(b, grad):
        run = block_ops(b, grad)
        for _ in range(3):
            run()
        torch.cuda.synchronize()
        if grad:        # autograd in a graph needs more care than this floor is worth
            return _time(lambda: [run() for _ in range(a.reps)], 10) / a.reps
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(a.reps):
                run()
        return _time(graph.replay, 10) / a.reps

    out = {'blocks_per_solve': SEGMENTS * 24}
    with torch.no_grad():
        for b in (1, 64, 768):
            ms = per_block_ms(b, False)
            floor = ms * SEGMENTS * 24
            r = speed.get(f'b{b}', {})
            out[f'b{b}'] = {'block_ms': ms, 'floor_ms': floor, 'ms_ref': r.get('ms_ref'),
                            'ms_ours': r.get('ms_ours'),
                            'max_speedup': r['ms_ref'] / floor if r.get('ms_ref') else None,
                            'ours_vs_floor': (r['ms_ours'] / floor if r.get('ms_ours')
                                              else None),
                            # GFLOP per ms = TFLOP/s
                            'floor_pct_peak': GFLOP_PER_PUZZLE * b / floor / peak * 100}
            print(f'b{b}: {json.dumps(out[f"b{b}"])}', flush=True)
    fwd, fwdbwd = per_block_ms(768, False), per_block_ms(768, True)
    floor = 40 * fwd + 8 * fwdbwd
    r = speed.get('train_b768', {})
    out['train_b768'] = {'block_fwd_ms': fwd, 'block_fwd_bwd_ms': fwdbwd, 'floor_ms': floor,
                         'ms_ref': r.get('ms_ref'), 'ms_ours': r.get('ms_ours'),
                         'max_speedup': r['ms_ref'] / floor if r.get('ms_ref') else None}
    print(f'train: {json.dumps(out["train_b768"])}', flush=True)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, 'hrm_gpu_bound.json'), 'w') as f:
        json.dump({'results': out, 'detail': {'device': torch.cuda.get_device_name(),
                                              'torch': torch.__version__,
                                              'peak_bf16_tflops_measured': peak}}, f, indent=1)
    return 0


def main(argv=None) -> int:
    """Run one part of the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest='part', required=True)
    s = sub.add_parser('speed')
    s.add_argument('--out', default=os.path.join(ROOT, 'bench', 'results'))
    s.add_argument('--batches', default='1,64,768')
    s.add_argument('--variants', default='inductor')
    s.add_argument('--skip-train', action='store_true')
    s.add_argument('--profile', action='store_true')
    s.add_argument('--deadline-s', type=float, default=540.0,
                   help='skip the parts not started after this many seconds')
    c = sub.add_parser('accuracy')
    c.add_argument('--out', default=os.path.join(ROOT, 'bench', 'results'))
    c.add_argument('--data', required=True, help='npz from sage_hrm.sudoku.make_dataset')
    c.add_argument('--models', default=','.join(MODELS))
    c.add_argument('--seeds', default='0', help='comma-separated; one run per model and seed')
    c.add_argument('--seconds', type=float, default=120.0,
                   help='training seconds (on the GPU) per run, over as many calls as needed')
    c.add_argument('--state', default=os.path.join(ROOT, '.ref', 'state'),
                   help='where runs keep their state between calls (not under --out, which '
                        'the device empties)')
    c.add_argument('--save-every', type=float, default=120.0, help='seconds between saves')
    c.add_argument('--gpus', type=int, default=0,
                   help='GPUs to spread the runs over, one process each (0: all visible)')
    c.add_argument('--jobs', default='', help=argparse.SUPPRESS)   # a worker's share
    c.add_argument('--size', choices=sorted(SIZES), default='paper')
    c.add_argument('--n-test', type=int, default=0, help='first N test puzzles (0: all)')
    c.add_argument('--batch-size', type=int, default=384)
    c.add_argument('--lr', type=float, default=1e-4)
    c.add_argument('--warmup', type=int, default=200)
    c.add_argument('--act-puzzles', type=int, default=200)
    c.add_argument('--device', default='cuda')
    c.add_argument('--deadline-s', type=float, default=540.0,
                   help='stop training (saving the state) after this many seconds')
    c.add_argument('--min-job-s', type=float, default=90.0,
                   help='start no run with less than this left before the deadline')
    c.add_argument('--extra', action='store_true',
                   help='then batch sizes again (inductor default and max-autotune)')
    c.add_argument('--extra-batches', default='1')
    c.add_argument('--no-compile', action='store_true', help='eager training (CPU smoke test)')
    t = sub.add_parser('train-parity', help='our training step against the reference (CPU)')
    t.add_argument('--out', default=os.path.join(ROOT, 'bench', 'results'))
    t.add_argument('--data', required=True, help='npz from sage_hrm.sudoku.make_dataset')
    t.add_argument('--batch-size', type=int, default=16)
    t.add_argument('--steps', type=int, default=18,
                   help='deep-supervision steps (18: every sample halts at 16 and restarts)')
    t.add_argument('--device', default='cpu')
    o = sub.add_parser('bound', help='the GEMM+attention floor under any implementation')
    o.add_argument('--out', default=os.path.join(ROOT, 'bench', 'results'))
    o.add_argument('--speed', default=os.path.join(ROOT, 'bench', 'results',
                                                   'hrm_gpu_speed.json'))
    o.add_argument('--reps', type=int, default=24)
    m = sub.add_parser('merge')
    m.add_argument('dirs', nargs='+')
    a = ap.parse_args(argv)
    return {'speed': part_speed, 'accuracy': part_accuracy, 'bound': part_bound,
            'train-parity': part_train_parity, 'merge': part_merge}[a.part](a)


if __name__ == '__main__':
    raise SystemExit(main())
