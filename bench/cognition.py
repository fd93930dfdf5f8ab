"""Cognition benchmark: the embedded model's speed, and trust when a backend misbehaves.

    python bench/cognition.py  ->  bench/results/cognition.json
    summary: thought_latency_s, tokens_per_s, load_s, trust_normal, trust_slow,
             trust_garbage, trust_failing

Speed: SmolLM2-135M-Instruct (GGUF, transformers, CPU), the node's prompt, 32
new tokens, greedy, median of 5 thoughts. Trust: the same model behind a real
OpenAI-compatible HTTP server that answers normally, slowly (1 s per token
against a 10 s budget), with garbage (a repeated word), or fails (HTTP 503):
what sage_core.cognition.thought gives each answer (a failure gives no thought,
and the node halves its standing plan's trust).
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import torch
from common import write
from sage_core.cognition.backends import BackendError, LocalBackend, OpenAIBackend
from sage_core.cognition.embedding import embed
from sage_core.cognition.thought import build_messages, thought_trust

PROMPT = build_messages('go to the red beacon', {'coherence score': 0.62, 'salience': 0.4})


def serve(local, mode):
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
                    time.sleep(1.0)
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


def main():
    torch.set_num_threads(2)
    local = LocalBackend()
    t0 = time.monotonic()
    local.load()
    load_s = time.monotonic() - t0
    runs = [local.generate(PROMPT, 32) for _ in range(5)]
    latency = float(np.median([r.latency_s for r in runs]))
    tps = float(np.median([r.tokens / r.latency_s for r in runs]))
    mode = {'now': 'normal'}
    backend = OpenAIBackend(serve(local, mode), 'SmolLM2-135M-Instruct', timeout_s=120,
                            retries=1)
    previous = embed(runs[0].text)
    trust = {}
    for m in ('normal', 'slow', 'garbage', 'failing'):
        mode['now'] = m
        try:
            th = backend.generate(PROMPT, 16)
            trust[m] = thought_trust(th.text, th.latency_s, 10.0, embed(th.text or ' '),
                                     previous)
            trust[m]['text'] = th.text
        except BackendError as exc:
            trust[m] = {'trust': 0.0, 'error': str(exc)}
    summary = {'thought_latency_s': round(latency, 2), 'tokens_per_s': round(tps, 1),
               'load_s': round(load_s, 1),
               **{f'trust_{m}': round(v['trust'], 3) for m, v in trust.items()}}
    rows = [('measure', 'value'),
            ('model load (GGUF -> transformers)', f'{load_s:.1f} s'),
            ('thought latency, 32 tokens, median of 5', f'{latency:.2f} s'),
            ('tokens per second', f'{tps:.1f}'),
            *[(f'trust, backend {m}', f"{v['trust']:.2f}  " +
               (v.get('error') or repr(v.get('text', ''))[:50])) for m, v in trust.items()]]
    write('cognition', summary, rows, {'runs': [r.__dict__ for r in runs], 'trust': trust,
                                       'threads': torch.get_num_threads()})


if __name__ == '__main__':
    sys.exit(main())
