"""Cognition benchmark: the embedded model's speed, the node's feature rate, and trust.

    python bench/cognition.py  ->  bench/results/cognition.json
    summary: thought_latency_s, tokens_per_s, tokens_per_s_2_threads, load_s, feature_rate_hz,
             thought_rate_hz, trust_normal, trust_slow, trust_garbage,
             trust_failing, node_alive

Speed: SmolLM2-135M-Instruct (GGUF, transformers, CPU), the node's prompt, 32
new tokens, greedy: median of 5 thoughts with 1 thread (the node's default) and
of 3 with 2 threads (on 2 cores shared with other work, 2 threads spin-wait
for each other and are much slower).

Node (a real rclpy graph): a cognition node whose backend is a real
OpenAI-compatible HTTP server (streaming SSE) around the same loaded model, so
the model is loaded once. Feature rate: salience held above the threshold at
20 Hz with min_interval_s 0 for ``--seconds``: fresh thoughts per second
(distinct stamps) and Feature messages per second (thoughts plus the standing
plan re-published at republish_hz). Trust: the server then answers normally,
slowly (0.6 s per token against a 5 s budget), fails (HTTP 503: no thought,
the standing plan's trust halves) and with garbage (a repeated word); for
each, the trust of what the node published, its diagnostics message, and
whether it kept running.
"""

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from common import write
from sage_cognition.backends import LocalBackend
from sage_cognition.thought import build_messages

PROMPT = build_messages('go to the red beacon', {'coherence': 'score 0.62; trust used: '
                                                 'vision 0.91, imu 0.80; ACT steps 2',
                                                 'salience': 0.4})
MODES = ('normal', 'slow', 'failing', 'garbage')   # failing after slow: its plan halves


def serve(local, mode):
    """Start a real OpenAI-compatible server around ``local``; return its URL."""
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
            if mode['now'] == 'failing':
                self.send_error(503, 'overloaded')
                return
            self.send_response(200)
            self.send_header('Content-Type', 'text/event-stream')
            self.end_headers()

            def send(piece):
                if mode['now'] == 'slow':
                    time.sleep(0.6)
                chunk = {'choices': [{'delta': {'content': piece}}]}
                self.wfile.write(f'data: {json.dumps(chunk)}\n\n'.encode())
            if mode['now'] == 'garbage':
                for _ in range(12):
                    send('left ')
            else:
                local.generate(body['messages'], body['max_tokens'], send)
            self.wfile.write(b'data: [DONE]\n\n')
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f'http://127.0.0.1:{httpd.server_address[1]}'


def node_bench(url, mode, seconds):
    """Feature rate and trust behaviour of a real cognition node; see the module doc."""
    from rclpy.parameter import Parameter
    from sage_cognition.cognition_node import CognitionNode
    from sage_ros.common import qos_from_name
    from sage_testing.graph import Graph
    from sage_msgs.msg import Feature, Salience
    from std_msgs.msg import String
    params = {'name': 'bench', 'backend': 'openai', 'url': url, 'max_tokens': 16,
              'think_period_s': 0.0, 'min_interval_s': 0.0, 'salience_threshold': 0.5,
              'latency_budget_s': 5.0, 'timeout_s': 60.0, 'retries': 1, 'republish_hz': 2.0}
    out = {}
    with Graph() as g:
        n = g.add(CognitionNode(context=g.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()]))
        features = g.collect(Feature, 'sage/features/cognition_bench')
        instruction = g.publisher(String, 'sage/instruction', qos_from_name('LATCHED'))
        instruction.publish(String(data='go to the red beacon'))
        if not g.wait_for(lambda: features, 120):
            raise SystemExit('the node published no thought')
        salience = g.publisher(Salience, 'sage/salience')
        del features[:]
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:         # salience spikes at 20 Hz
            salience.publish(Salience(total=1.0))
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        stamps = {(f.header.stamp.sec, f.header.stamp.nanosec) for f in features}
        out['feature_rate_hz'] = len(features) / elapsed
        out['thought_rate_hz'] = len(stamps) / elapsed
        g.wait_for(lambda: n._jobs.empty() and not n.busy, 60)
        out['trust'] = {}
        for i, m in enumerate(MODES):
            mode['now'] = m
            thoughts, failures = n.thoughts, n.failures
            instruction.publish(String(data=f'go to the red beacon ({i})'))
            g.wait_for(lambda: n.thoughts > thoughts or n.failures > failures, 120)
            time.sleep(1.0)                           # a re-publication of the plan
            out['trust'][m] = {'trust': float(n.current.trust), 'diagnostics': n.diag.message,
                               'level': n.diag.level, 'failures': n.failures}
        mode['now'] = 'normal'
        out['node_alive'] = bool(n.context.ok() and n._worker.is_alive())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seconds', type=float, default=15.0, help='feature-rate window')
    args = ap.parse_args()
    local = LocalBackend(threads=2)
    t0 = time.monotonic()
    local.load()
    load_s = time.monotonic() - t0
    runs2 = [local.generate(PROMPT, 32) for _ in range(3)]
    local.threads = 1                                 # the node's default
    runs = [local.generate(PROMPT, 32) for _ in range(5)]
    latency = float(np.median([r.latency_s for r in runs]))
    tps = float(np.median([r.tokens / r.latency_s for r in runs]))
    tps2 = float(np.median([r.tokens / r.latency_s for r in runs2]))
    mode = {'now': 'normal'}
    node = node_bench(serve(local, mode), mode, args.seconds)
    trust = node['trust']
    summary = {'thought_latency_s': round(latency, 2), 'tokens_per_s': round(tps, 1),
               'tokens_per_s_2_threads': round(tps2, 1),
               'load_s': round(load_s, 1), 'feature_rate_hz': round(node['feature_rate_hz'], 2),
               'thought_rate_hz': round(node['thought_rate_hz'], 2),
               **{f'trust_{m}': round(v['trust'], 3) for m, v in trust.items()},
               'node_alive': node['node_alive']}
    rows = [('measure', 'value'),
            ('model load (GGUF -> transformers)', f'{load_s:.1f} s'),
            ('thought latency, 32 tokens, 1 thread, median of 5', f'{latency:.2f} s'),
            ('tokens per second, 1 thread', f'{tps:.1f}'),
            ('tokens per second, 2 threads, median of 3', f'{tps2:.1f}'),
            ('node: fresh thoughts per second (16 tokens)', f"{node['thought_rate_hz']:.2f}"),
            ('node: Feature messages per second', f"{node['feature_rate_hz']:.2f}"),
            *[(f'node trust, backend {m}', f"{v['trust']:.2f}  {v['level']}: "
               f"{v['diagnostics'][:90]}") for m, v in trust.items()],
            ('node still running', str(node['node_alive']))]
    write('cognition', summary, rows, {'runs': [r.__dict__ for r in runs],
                                       'runs_2_threads': [r.__dict__ for r in runs2],
                                       'node': node,
                                       'load_average': os.getloadavg()})


if __name__ == '__main__':
    sys.exit(main())
