"""HRM latency on this CPU: the coherence-size config at batch 1 (one ACT segment).

    python bench/hrm_cpu.py  ->  bench/results/hrm_cpu.json
    summary: latency_ms_b1 (median of one segment, coherence-size config, batch 1, eager torch)

Rows also give p90, the lead's current coherence HRM (hidden 64) and ONNX Runtime for the
token config; all at torch.set_num_threads(1)  # small matrices: threads only add contention.
"""

import os
import sys
import tempfile
import time

import numpy as np
import torch
from common import write
from sage_hrm.export import _Segment, export_onnx, initial_state
from sage_hrm.model import HRM, HRMConfig, InnerCarry

torch.set_num_threads(1)  # small matrices: threads only add contention


def timeit(fn, n=200, warm=20):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return np.median(ts) * 1e3, np.percentile(ts, 90) * 1e3


def segment_latency(cfg: HRMConfig, batch=1):
    model = HRM(cfg).eval()
    inner = model.inner
    x = torch.randn(batch, cfg.seq_len, cfg.hidden_size)
    carry = inner.reset_carry(torch.ones(batch, dtype=torch.bool),
                              inner.empty_carry(batch, cfg.seq_len))

    @torch.inference_mode()
    def run():
        inner(InnerCarry(carry.z_H, carry.z_L), x)
    return timeit(run)


def main() -> int:
    configs = {
        'coherence-size (h128, 2+2 layers, 8 tok)': HRMConfig(
            seq_len=8, vocab_size=0, hidden_size=128, num_heads=4, H_layers=2, L_layers=2,
            pos_encodings='none'),
        'coherence default (h64, 1+1, exp 2)': HRMConfig(
            seq_len=8, vocab_size=0, hidden_size=64, num_heads=2, H_layers=1, L_layers=1,
            expansion=2.0, pos_encodings='none'),
    }
    rows, detail = [('config', 'p50 ms', 'p90 ms')], {}
    for name, cfg in configs.items():
        p50, p90 = segment_latency(cfg)
        rows.append((name, f'{p50:.3f}', f'{p90:.3f}'))
        detail[name] = {'p50_ms': p50, 'p90_ms': p90, 'config': cfg.to_dict()}
    # ONNX Runtime for the same size with token input (the exported graph)
    try:
        import onnxruntime as ort
        cfg = HRMConfig(seq_len=8, vocab_size=12, hidden_size=128, num_heads=4, H_layers=2,
                        L_layers=2)
        model = HRM(cfg).eval()
        with tempfile.TemporaryDirectory() as d:
            path = export_onnx(model, os.path.join(d, 'seg.onnx'))
            so = ort.SessionOptions()
            so.intra_op_num_threads = 2
            sess = ort.InferenceSession(path, so, providers=['CPUExecutionProvider'])
            z_H, z_L = initial_state(model, 1)
            feeds = {'inputs': np.zeros((1, 8), np.int64), 'z_H': z_H.numpy(),
                     'z_L': z_L.numpy()}
            p50, p90 = timeit(lambda: sess.run(None, feeds))
        rows.append(('coherence-size, ONNX Runtime (tokens)', f'{p50:.3f}', f'{p90:.3f}'))
        detail['onnxruntime'] = {'p50_ms': p50, 'p90_ms': p90}
        seg = _Segment(model)
        with torch.inference_mode():
            t50, _ = timeit(lambda: seg(torch.zeros(1, 8, dtype=torch.long), z_H, z_L))
        detail['torch_tokens_p50_ms'] = t50
    except ImportError as e:
        print(f'onnxruntime skipped: {e}', file=sys.stderr)
    summary = {'latency_ms_b1': detail[next(iter(configs))]['p50_ms']}
    write('hrm_cpu', summary, rows, detail)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
