r"""Command line for the HRM: ``train``, ``eval`` and ``export`` (wired into ``sage hrm ...``).

Examples::

    python -m sage_hrm.cli train --task sudoku4 --out runs/s4 --steps 400
    python -m sage_hrm.cli train --task sudoku9-hard --size paper --device cuda \\
        --out runs/paper --time-limit 300          # re-run the same line to resume
    python -m sage_hrm.cli eval --out runs/s4
    python -m sage_hrm.cli export --out runs/s4 --onnx runs/s4/segment.onnx [--tensorrt]

A run directory holds ``data.npz`` (generated deterministically from ``--seed``),
``checkpoint.pt`` (atomic, exact resume: re-running ``train`` continues where it stopped),
``eval.json`` and ``accuracy_vs_segments.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

TASKS = ('sudoku4', 'sudoku9', 'sudoku9-hard', 'maze')


def make_task(task: str, seed: int, n_train: int, n_test: int) -> dict:
    """Generate a task's train/test token arrays (deterministic by seed)."""
    from sage_hrm import sudoku as S
    if task.startswith('sudoku'):
        kw = {'sudoku4': dict(box=2, max_guesses=0, min_blanks=4, max_blanks=6),
              'sudoku9': dict(box=3, max_guesses=0, max_blanks=45),
              'sudoku9-hard': dict(box=3, min_guesses=3)}[task]
        d = S.make_dataset(seed, n_train, n_test, **kw)
        out = {'vocab_size': S.vocab_size(kw['box']), 'box': kw['box']}
        for split, (p, s, g) in d.items():
            out[f'{split}_inputs'] = S.to_tokens(p)
            out[f'{split}_labels'] = S.to_tokens(s)
            out[f'{split}_rating'] = g
        return out
    from sage_hrm import maze as M
    d = M.make_dataset(seed, n_train, n_test)
    return {**d, 'vocab_size': M.VOCAB}


def _augment_fn(task: str, box: int):
    if not task.startswith('sudoku'):
        return None
    from sage_hrm import sudoku as S
    n = box * box

    def aug(x, y, rng):
        xs, ys = [], []
        for a, b in zip(x.numpy(), y.numpy()):
            p, s = S.augment(S.from_tokens(a, n), S.from_tokens(b, n), rng)
            xs.append(S.to_tokens(p))
            ys.append(S.to_tokens(s))
        return torch.as_tensor(np.stack(xs)), torch.as_tensor(np.stack(ys))
    return aug


def _model_config(args, data: dict):
    from sage_hrm.model import HRMConfig
    seq = data['train_inputs'].shape[1]
    if args.size == 'paper':
        return HRMConfig.sudoku_paper(seq_len=seq, vocab_size=int(data['vocab_size']),
                                      puzzle_emb_ndim=0)
    return HRMConfig.tiny(seq_len=seq, vocab_size=int(data['vocab_size']),
                          hidden_size=args.hidden, num_heads=max(1, args.hidden // 16),
                          H_cycles=args.h_cycles, L_cycles=args.l_cycles,
                          halt_max_steps=args.max_steps, pos_encodings=args.pos)


def _load_data(args) -> dict:
    path = os.path.join(args.out, 'data.npz')
    if os.path.exists(path):
        return dict(np.load(path))
    data = make_task(args.task, args.seed, args.n_train, args.n_test)
    os.makedirs(args.out, exist_ok=True)
    np.savez(path + '.tmp.npz', **data)
    os.replace(path + '.tmp.npz', path)
    return data


def _trainer(args, data: dict):
    from sage_hrm.train import Trainer, TrainConfig
    tc = TrainConfig(batch_size=args.batch_size, steps=args.steps, lr=args.lr,
                     lr_warmup_steps=args.warmup, weight_decay=args.weight_decay,
                     loss=args.loss, ema=args.ema, checkpoint_every=args.checkpoint_every,
                     log_every=args.log_every, seed=args.seed, lr_min_ratio=args.lr_min_ratio)
    return Trainer(_model_config(args, data), tc, data['train_inputs'], data['train_labels'],
                   device=args.device,
                   augment_fn=_augment_fn(args.task, int(data.get('box', 3)))
                   if args.augment else None)


def cmd_train(args) -> int:
    """Train (resuming from ``out/checkpoint.pt`` when present), then evaluate."""
    torch.set_num_threads(args.threads)
    data = _load_data(args)
    tr = _trainer(args, data)
    ckpt = os.path.join(args.out, 'checkpoint.pt')
    if os.path.exists(ckpt):
        tr.load(ckpt)
        print(f'resumed from {ckpt} at step {tr.step}', flush=True)
    tr.fit(ckpt, log=lambda s: print(s, flush=True), time_limit_s=args.time_limit)
    if tr.step >= args.steps and args.n_test > 0:
        return cmd_eval(args, tr)
    return 0


def cmd_eval(args, tr=None) -> int:
    """Evaluate the run's checkpoint on its test split; write eval.json and the plot."""
    from sage_hrm.train import evaluate, plot_by_segment
    data = _load_data(args)
    if tr is None:
        tr = _trainer(args, data)
        tr.load(os.path.join(args.out, 'checkpoint.pt'))
    model = tr.ema if tr.ema is not None else tr.model
    r = evaluate(model, data['test_inputs'], data['test_labels'], device=args.device,
                 max_steps=args.eval_steps)
    if args.task == 'maze':
        from sage_hrm import maze as M
        r['valid_optimal'] = M.score_model(model, data['test_inputs'], device=args.device)
    with open(os.path.join(args.out, 'eval.json'), 'w') as f:
        json.dump(r, f, indent=1)
    plot_by_segment(r, os.path.join(args.out, 'accuracy_vs_segments.png'), args.task)
    print(f"eval n={r['n']} exact {r['exact']:.4f} cell {r['cell_acc']:.4f} "
          f"mean ACT steps {r['mean_steps']:.2f} hist {r['steps_hist']}", flush=True)
    return 0


def cmd_export(args) -> int:
    """Export one segment to ONNX, optionally build a TensorRT engine."""
    from sage_hrm import export as E
    data = _load_data(args)
    tr = _trainer(args, data)
    tr.load(os.path.join(args.out, 'checkpoint.pt'))
    path = E.export_onnx(tr.model.cpu(), args.onnx or os.path.join(args.out, 'segment.onnx'))
    print(f'ONNX: {path}')
    if args.tensorrt:
        try:
            cache = args.cache_dir or os.path.join(args.out, 'engines')
            print('engine:', E.build_engine(path, cache))
        except E.TensorRTUnavailable as e:
            print(f'error: {e}', file=sys.stderr)
            return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argparse parser (also used by ``sage hrm``)."""
    p = argparse.ArgumentParser(prog='sage hrm', description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='cmd', required=True)
    for name in ('train', 'eval', 'export'):
        s = sub.add_parser(name)
        s.add_argument('--out', required=True, help='run directory')
        s.add_argument('--task', choices=TASKS, default='sudoku4')
        s.add_argument('--seed', type=int, default=0)
        s.add_argument('--n-train', type=int, default=1000)
        s.add_argument('--n-test', type=int, default=200)
        s.add_argument('--size', choices=('tiny', 'paper'), default='tiny')
        s.add_argument('--hidden', type=int, default=64)
        s.add_argument('--h-cycles', type=int, default=1)
        s.add_argument('--l-cycles', type=int, default=2)
        s.add_argument('--max-steps', type=int, default=2, help='ACT halt_max_steps')
        s.add_argument('--pos', choices=('rope', 'learned'), default='learned')
        s.add_argument('--steps', type=int, default=400)
        s.add_argument('--batch-size', type=int, default=64)
        s.add_argument('--lr', type=float, default=3e-3)
        s.add_argument('--lr-min-ratio', type=float, default=0.1)
        s.add_argument('--warmup', type=int, default=20)
        s.add_argument('--weight-decay', type=float, default=0.1)
        s.add_argument('--loss', choices=('stablemax', 'softmax'), default='softmax')
        s.add_argument('--ema', type=float, default=0.0, help='EMA decay (TRM option; 0=off)')
        s.add_argument('--augment', action='store_true')
        s.add_argument('--checkpoint-every', type=int, default=100)
        s.add_argument('--log-every', type=int, default=50)
        s.add_argument('--time-limit', type=float, default=None, help='seconds, then stop')
        s.add_argument('--eval-steps', type=int, default=None)
        s.add_argument('--device', default='cpu')
        s.add_argument('--threads', type=int, default=2)
        if name == 'export':
            s.add_argument('--onnx', default=None)
            s.add_argument('--tensorrt', action='store_true')
            s.add_argument('--cache-dir', default=None)
    return p


def main(argv=None) -> int:
    """Run one subcommand (train, eval, export) and return its exit code."""
    args = build_parser().parse_args(argv)
    return {'train': cmd_train, 'eval': cmd_eval, 'export': cmd_export}[args.cmd](args)


if __name__ == '__main__':
    raise SystemExit(main())
