"""Soak: the default graph for hours, with its language model thinking.

    python bench/soak.py --hours H     ->  bench/results/soak.json

Runs `sage run --processes` (the world, every node of config/sage.yaml, and the
advisor: SmolLM2 thinking about the instruction every minute) in a fresh $SAGE_HOME and
samples every ``--every`` seconds: each node process's RSS, the control loop's latency
(camera frame heard -> decision heard, wall clock, as bench/coherence.py measures it),
the experience store's rows and frames against their caps, dropped and rejected
messages from diagnostics, restarts, and what each night's consolidation did. The
world lives days and nights (config/sage.yaml): at night it publishes only /clock while
the sleep node trains, so the loop is measured while awake. Summary: hours,
rss_growth_pct_per_h_max (per node, awake sample to awake sample with no sleep cycle
under way: from the first after warm-up and after the first night, when the sleep node
has trained once, to the last),
p99_latency_drift_pct (the last ten awake minutes' p99 against the first ten's),
restarts, nights, sleep_rss_peak_mb.
"""

import argparse
import os
import sqlite3
import subprocess
import tempfile
import time

import common  # noqa: F401  (first: ROS on localhost, a run-unique domain, test support)
import numpy as np
import psutil
import yaml

ADVISOR = {'name': 'advisor', 'backend': 'local', 'threads': 1, 'max_tokens': 32,
           'think_period_s': 60.0, 'salience_threshold': 0.8, 'peers': ['main'],
           'exchanges_path': 'memory/exchanges.jsonl'}


def node_processes(graph: psutil.Process) -> dict:
    """{node name: process} of `sage run --processes`' children (by executable)."""
    out = {}
    for child in graph.children():
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        name = next((a.split('__node:=')[1] for a in cmd if '__node:=' in a), None)
        exe = next((os.path.basename(a) for a in cmd if a.endswith('_node')), '?')
        out[name or exe] = child
    return out


def store_counts(path: str) -> dict:
    """Rows and frames in the experience store (read-only; {} before it exists)."""
    if not os.path.exists(path):
        return {}
    db = sqlite3.connect(f'file:{path}?mode=ro', uri=True, timeout=5)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return {t: db.execute(f'SELECT COUNT(*) FROM {t}').fetchone()[0] for t in tables}
    finally:
        db.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--hours', type=float, default=1.0)
    parser.add_argument('--every', type=float, default=30.0, help='seconds between samples')
    parser.add_argument('--warmup', type=float, default=300.0, help='seconds before the '
                        'first RSS and latency baseline (models load, caches fill)')
    args = parser.parse_args()

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from sage_msgs.msg import Coherence, SleepStatus
    from sage_ros.common import qos_from_name
    from sensor_msgs.msg import Image

    home = tempfile.mkdtemp(prefix='sage_soak_')
    env = dict(os.environ, SAGE_HOME=home)
    subprocess.run(['sage', 'init'], env=env, check=True, capture_output=True)
    params = yaml.safe_load(open(os.path.join(common.ROOT, 'config', 'sage.yaml')))
    params['advisor'] = {'ros__parameters': ADVISOR}
    params_path = os.path.join(home, 'soak.yaml')
    with open(params_path, 'w') as f:
        yaml.safe_dump(params, f)
    memory = params['memory']['ros__parameters']
    err_path = os.path.join(home, 'graph.err')
    proc = subprocess.Popen(['sage', 'run', '--processes', '--params-file', params_path],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(err_path, 'w'))
    graph = psutil.Process(proc.pid)

    rclpy.init()
    node = rclpy.create_node('bench_soak')
    frames, cycles, diag, nights = {}, [], {}, []

    def ns(stamp):
        return stamp.sec * 1_000_000_000 + stamp.nanosec

    def on_cycle(m):
        if 'vision' in m.modalities:
            age = m.age_s[list(m.modalities).index('vision')]
            cycles.append((time.monotonic(), ns(m.header.stamp) - int(round(age * 1e9))))

    def on_diag(msg):
        for st in msg.status:
            diag[st.name] = {v.key: v.value for v in st.values}
    node.create_subscription(Image, 'camera/image_raw', lambda m: frames.setdefault(
        ns(m.header.stamp), time.monotonic()), qos_from_name('SENSOR_DATA'))
    node.create_subscription(Coherence, 'sage/coherence', on_cycle, 50)
    node.create_subscription(DiagnosticArray, 'diagnostics', on_diag, 50)
    sleeping = [False]              # a cycle under way: its RSS is the night's, not a leak

    def on_sleep(m):
        sleeping[0] = m.phase not in ('idle', 'done', 'rollback')
        if m.phase == 'done':
            nights.append(m.message)
    node.create_subscription(SleepStatus, 'sage/sleep/status', on_sleep, 10)

    start = time.monotonic()
    end = start + args.hours * 3600
    samples, used = [], set()
    next_sample = start + args.every
    try:
        while time.monotonic() < end and proc.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.1)
            if time.monotonic() < next_sample:
                continue
            next_sample += args.every
            now = time.monotonic()
            lat = []
            stamps = np.array(sorted(frames)) if frames else np.zeros(0, np.int64)
            for heard, frame in cycles:
                if not len(stamps):
                    break
                k = int(np.argmin(np.abs(stamps - frame)))
                if abs(stamps[k] - frame) < 5_000_000 and stamps[k] not in used:
                    used.add(stamps[k])
                    lat.append(1e3 * (heard - frames[stamps[k]]))
            frames.clear()
            cycles.clear()
            rss = {}
            for name, p in node_processes(graph).items():
                try:
                    rss[name] = p.memory_info().rss / 2**20
                except psutil.Error:
                    pass
            dropped = sum(float(v.get(k, 0) or 0) for v in diag.values()
                          for k in ('dropped', 'rejected_features', 'rejected'))
            samples.append({'t_s': round(now - start, 1), 'rss_mb': rss,
                            'latency_ms': lat, 'store': store_counts(
                                os.path.join(home, memory['store_path'])),
                            'dropped': dropped, 'nights': len(nights),
                            'sleeping': sleeping[0]})
            p99 = f'{np.percentile(lat, 99):.1f}' if lat else 'n/a'
            print(f'soak {(now - start) / 60:6.1f} min: loop p99 {p99} ms, '
                  f'RSS {sum(rss.values()):.0f} MB over {len(rss)} nodes', flush=True)
    finally:
        node.destroy_node()
        rclpy.shutdown()
        proc.terminate()
        proc.wait(60)
    hours = (time.monotonic() - start) / 3600
    awake = [s for s in samples if s['t_s'] >= args.warmup and s['latency_ms']]
    settled = [s for s in awake if not s.get('sleeping')]      # no cycle under way
    slept = [s for s in settled if s['nights'] > 0]
    base = (slept or settled or awake or samples)[0]
    last = (settled or awake or samples)[-1]
    growth = {n: 100 * (last['rss_mb'][n] - base['rss_mb'][n]) / base['rss_mb'][n]
              / max(1e-6, (last['t_s'] - base['t_s']) / 3600)
              for n in base['rss_mb'] if n in last['rss_mb']}
    window = max(1, int(600 / args.every))          # ten minutes of samples
    first = [x for s in awake[:window] for x in s['latency_ms']]
    final = [x for s in awake[-window:] for x in s['latency_ms']]
    p99_first, p99_last = np.percentile(first, 99), np.percentile(final, 99)
    restarts = open(err_path).read().count('respawning')
    summary = {'hours': round(hours, 2),
               'rss_growth_pct_per_h_max': round(max(growth.values()), 2),
               'p99_latency_drift_pct': round(100 * (p99_last - p99_first) / p99_first, 1),
               'restarts': restarts,
               'p99_latency_first_ms': round(float(p99_first), 1),
               'p99_latency_last_ms': round(float(p99_last), 1),
               'store_rows_end': last['store'].get('steps', 0),
               'store_rows_cap': memory['max_rows'],
               'frames_end': last['store'].get('frames', 0),
               'dropped_or_rejected': last['dropped'],
               'nights': len(nights),
               'sleep_rss_peak_mb': round(max(s['rss_mb'].get('sleep', 0) for s in samples))}
    rows = [('node', 'RSS start MB', 'RSS end MB', 'growth %/h')]
    rows += [(n, f'{base["rss_mb"][n]:.0f}', f'{last["rss_mb"][n]:.0f}', f'{g:.2f}')
             for n, g in sorted(growth.items())]
    rows += [(k, '', '', v) for k, v in summary.items()]
    common.write('soak', summary, rows, {'samples': samples, 'rss_growth_pct_per_h': growth,
                                         'night_messages': nights})


if __name__ == '__main__':
    main()
