"""Coherence benchmark: closed-loop success, trust under faults, and latency.

    python bench/coherence.py  ->  bench/results/coherence.json
    summary: success, random_success, oracle_success, fault_success_learned_trust,
             fault_success_uniform_trust, loop_latency_p50_ms, loop_latency_p99_ms

Uses the committed model in $SAGE_HOME/models (installs the shipped base model,
as `sage init` does, if there is none). Success figures run the library
loop (the same feature extractors and runtime as the nodes); latency runs the
full graph (`sage run --processes`, one process per node, the world's camera at 30 Hz):
camera frame heard -> decision heard, wall clock (see loop_latency).

    python bench/coherence.py --gpu  ->  bench/results/coherence_gpu.json
    model latency per cycle on CUDA for the torch and ONNX Runtime backends
    (summary: torch_cuda_p50_ms, onnxruntime_cuda_p50_ms, ...); needs no ROS.
"""

import os
import subprocess
import sys
import time

import numpy as np
import torch
from common import write
from sage_common.checkpoints import CheckpointStore
from sage_coherence.runtime import install_base, load_runtime
from sage_sim.evaluate import FAULTY, MORNING, OraclePolicy, RandomPolicy, evaluate
from sage_sleep.agent import CoherencePolicy


WORKERS = max(1, min(4, os.cpu_count() or 1))   # episodes in parallel (forked processes)


def model_dir() -> str:
    from sage_common.paths import resolve_path
    root = resolve_path('models')
    install_base(root)
    return root


def success(root, suite, uniform=False, backend='torch'):
    runtime = load_runtime(root, backend=backend)
    return evaluate(lambda w: CoherencePolicy(runtime, uniform_trust=uniform), suite,
                    workers=WORKERS)


def model_latency(root, backend, n=300, device='cpu'):
    runtime = load_runtime(root, backend=backend, device=device)
    vectors = {m: np.random.default_rng(0).normal(size=d).astype(np.float32)
               for m, d in runtime.dims.items()}
    k = len(runtime.modalities)
    times = [runtime.step(vectors, np.ones(k), np.zeros(k)).latency_ms for _ in range(n)]
    return float(np.median(times)), float(np.percentile(times, 99))


def loop_latency(seconds=25.0, camera_hz=30.0, listen=None):
    """Camera frame -> decision in wall time, with the full graph in one process per node.

    Returns {p50, p99, model_p50, frames_decided, frames_seen, samples: [(frame heard,
    latency ms)], started}; ``listen(node, started)`` may add subscriptions of its own
    (``started``: monotonic time of the graph's start).

    The world steps 0.1 s of sim time per frame; ``camera_hz`` frames per wall
    second is its real_time_factor (3 for 30 Hz), so the graph carries that load.

    The bench hears each camera/image_raw frame and each sage/coherence cycle and
    notes when (wall clock); a cycle's frame is its stamp minus the vision age it
    reports (both sim time, so exact). Latency = cycle heard - frame heard: the
    camera node, two hops of transport, fusion and the model. (The age alone is
    sim time, quantised to the world's 0.1 s step, and says nothing in wall time.)
    """
    import rclpy
    from sage_ros.common import qos_from_name
    from sage_msgs.msg import Coherence
    from sensor_msgs.msg import Image
    params = os.path.join(os.path.dirname(__file__), 'results', 'latency_params.yaml')
    with open(os.path.join(os.environ.get('SAGE_ROOT', '.'), 'config', 'sage.yaml')) as f:
        text = f.read().replace('real_time_factor: 1.0', f'real_time_factor: {camera_hz / 10}')
    with open(params, 'w') as f:
        f.write(text)
    started = time.monotonic()
    proc = subprocess.Popen(['sage', 'run', '--processes', '--params-file', params, '--duration',
                             str(seconds + 15)], stdout=subprocess.DEVNULL)
    rclpy.init()
    node = rclpy.create_node('bench_latency')
    if listen is not None:
        listen(node, started)
    frames, cycles = {}, []

    def ns(stamp):
        return stamp.sec * 1_000_000_000 + stamp.nanosec
    node.create_subscription(Image, 'camera/image_raw', lambda m: frames.setdefault(
        ns(m.header.stamp), time.monotonic()), qos_from_name('SENSOR_DATA'))
    node.create_subscription(Coherence, 'sage/coherence', lambda m: cycles.append(
        (time.monotonic(), m)), 50)
    end = time.monotonic() + seconds + 12
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    rclpy.shutdown()
    proc.wait()
    os.remove(params)
    stamps = np.array(sorted(frames))
    first = {}                                   # frame -> the first cycle that used it
    for heard, m in cycles[30:]:                 # after start-up
        if 'vision' not in m.modalities or not len(stamps):
            continue
        frame = ns(m.header.stamp) - int(round(m.age_s[list(m.modalities).index('vision')]
                                               * 1e9))
        k = int(np.argmin(np.abs(stamps - frame)))
        if abs(stamps[k] - frame) < 5_000_000:  # 5 ms: frames are 100 ms of sim time apart
            first.setdefault(int(stamps[k]), (heard, m.latency_ms))
    samples = [(frames[f], 1e3 * (heard - frames[f])) for f, (heard, _) in first.items()]
    lat = [ms for _, ms in samples]
    return {'p50': float(np.median(lat)), 'p99': float(np.percentile(lat, 99)),
            'model_p50': float(np.median([ms for _, ms in first.values()])),
            'frames_decided': len(lat), 'frames_seen': len(frames), 'samples': samples,
            'started': started}


def gpu_main(root):
    """Model latency per control cycle on the GPU, per backend (batch 1, as the node runs)."""
    import onnxruntime as ort
    summary, rows = {}, [('backend (batch 1, one cycle incl. ACT)', 'p50 ms', 'p99 ms')]
    for backend in ('torch', 'onnxruntime'):
        if backend == 'onnxruntime' and 'CUDAExecutionProvider' not in \
                ort.get_available_providers():
            rows.append((f'{backend} cuda', 'n/a: onnxruntime has no CUDA provider here', ''))
            continue
        p50, p99 = model_latency(root, backend, n=1000, device='cuda')
        summary[f'{backend}_cuda_p50_ms'], summary[f'{backend}_cuda_p99_ms'] = p50, p99
        rows.append((f'{backend} cuda', f'{p50:.3f}', f'{p99:.3f}'))
    p50, p99 = model_latency(root, 'torch', n=1000)
    summary['torch_cpu_same_host_p50_ms'] = p50
    rows.append(('torch cpu, same host (1 thread)', f'{p50:.3f}', f'{p99:.3f}'))
    write('coherence_gpu', summary, rows, {'gpu': torch.cuda.get_device_name()})


def main():
    torch.set_num_threads(1)
    if '--gpu' in sys.argv[1:]:             # the shipped base model, no ROS needed
        import tempfile
        root = tempfile.mkdtemp()
        install_base(root)
        return gpu_main(root)
    root = model_dir()
    version = CheckpointStore(root, 'coherence').latest_version()
    ours = success(root, MORNING)
    oracle = evaluate(OraclePolicy, MORNING, workers=WORKERS)
    rand = evaluate(lambda w: RandomPolicy(0), MORNING)
    learned = success(root, FAULTY)
    uniform = success(root, FAULTY, uniform=True)
    lat = {b: model_latency(root, b) for b in ('torch', 'onnxruntime')}
    loop = loop_latency()
    p50, p99, model_p50 = loop['p50'], loop['p99'], loop['model_p50']
    summary = {'success': ours.success_rate, 'random_success': rand.success_rate,
               'oracle_success': oracle.success_rate,
               'fault_success_learned_trust': learned.success_rate,
               'fault_success_uniform_trust': uniform.success_rate,
               'loop_latency_p50_ms': round(p50, 2), 'loop_latency_p99_ms': round(p99, 2)}
    rows = [('measure', 'value'),
            ('model', f'coherence v{version:04d}'),
            (f'success, {MORNING.name} suite ({len(MORNING.seeds)} episodes)',
             f'{ours.success_rate:.2f}'),
            ('  random policy (floor)', f'{rand.success_rate:.2f}'),
            ('  oracle (ceiling)', f'{oracle.success_rate:.2f}'),
            (f'success with faults ({FAULTY.name}), learned trust',
             f'{learned.success_rate:.2f}'),
            ('  same, trust forced uniform', f'{uniform.success_rate:.2f}'),
            ('  learned trust vs fault-free',
             f'{learned.success_rate / max(ours.success_rate, 1e-9):.2f}'),
            ('collisions / episode (ours)', f'{ours.collisions_per_episode:.1f}'),
            ('loop latency camera frame -> decision, p50 / p99 ms (full graph, 30 Hz, wall)',
             f'{p50:.1f} / {p99:.1f}'),
            ('  model time p50 in the graph, ms', f'{model_p50:.2f}'),
            *[(f'model latency {b} p50 / p99 ms (batch 1, CPU)', f'{v[0]:.2f} / {v[1]:.2f}')
              for b, v in lat.items()]]
    write('coherence', summary, rows, {'frames_decided': loop['frames_decided'],
                                       'frames_seen': loop['frames_seen'],
                                       'episodes': ours.episodes})


if __name__ == '__main__':
    sys.exit(main())
