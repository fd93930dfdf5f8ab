"""The cognition node: language as a trust-weighted sensor of possible futures.

Subscribes to sage/instruction (text from a person, ASR or another stack),
treats it strictly as data (sanitised, length-limited, never executed), and
publishes the standing plan as a sentence-embedding Feature on
sage/features/cognition_<name> (re-published at a low rate, keeping the
thought's original stamp so fusion sees its true age) and as text on
sage/cognition/<name>/text. The embedding model loads and runs in a worker
thread, never on the executor thread.

Generation with a language model (SmolLM2 or an OpenAI-compatible server) is
not built yet: today the node encodes the instruction itself (backend 'none').
"""

from __future__ import annotations

import queue
import threading

from rclpy.node import Node
from sage_msgs.msg import Feature
from std_msgs.msg import String

from sage_core.cognition.text import sanitize
from sage_core.ros_common import (Diagnostics, Param, declare_parameters, make_feature,
                                  qos_from_name, stamp)

PARAMS = [
    Param('name', 'main', 'instance name: topics sage/cognition/<name>/text and '
          'sage/features/cognition_<name>',
          check=lambda v: None if v.isidentifier() else 'name must be an identifier'),
    Param('backend', 'none', 'what thinks: none = encode the instruction itself',
          choices=('none',)),
    Param('republish_hz', 2.0, 'rate at which the standing plan is re-published',
          low=0.1, high=50.0),
    Param('max_chars', 240, 'longest instruction or thought kept, characters', low=8,
          high=10000),
]


class CognitionNode(Node):
    """Encode instructions into a sticky, trust-weighted cognition feature."""

    def __init__(self, **kwargs):
        super().__init__(kwargs.pop('node_name', 'cognition'), **kwargs)
        self.p = declare_parameters(self, PARAMS)
        name = self.p['name']
        self.modality = f'cognition_{name}'
        self.diag = Diagnostics(self)
        self.pub_feature = self.create_publisher(Feature, f'sage/features/{self.modality}', 10)
        self.pub_text = self.create_publisher(String, f'sage/cognition/{name}/text', 10)
        self.create_subscription(String, 'sage/instruction', self._on_instruction,
                                 qos_from_name('LATCHED'))
        self.current: Feature | None = None
        self.thoughts = 0
        self._jobs: queue.Queue = queue.Queue(maxsize=4)
        self._worker = threading.Thread(target=self._work, daemon=True)
        self._worker.start()
        self.create_timer(1.0 / self.p['republish_hz'], self._republish)
        self.diag.set('OK', 'loading the sentence-embedding model')

    def _on_instruction(self, msg: String) -> None:
        text = sanitize(msg.data, self.p['max_chars'])
        if not text:
            self.diag.set('WARN', 'ignored an empty or unprintable instruction')
            return
        try:
            self._jobs.put_nowait((text, stamp(self)))
        except queue.Full:
            self.diag.set('WARN', 'instructions arrive faster than they are encoded')

    def _work(self) -> None:
        from sage_core.cognition.embedding import embed
        embed('warm up')  # load the model off the executor thread
        self.diag.set('OK', 'ready')
        while True:
            text, when = self._jobs.get()
            if text is None:
                return
            vector = embed(text)
            self.current = make_feature(self, self.modality, vector, 1.0,
                                        {'chars': float(len(text))}, header_stamp=when)
            self.thoughts += 1
            self.pub_text.publish(String(data=text))
            self.pub_feature.publish(self.current)
            self.diag.set('OK', f'plan: {text[:60]}', thoughts=self.thoughts)

    def _republish(self) -> None:
        if self.current is not None:
            self.pub_feature.publish(self.current)

    def destroy_node(self):
        """Stop the worker, then destroy the node."""
        self._jobs.put((None, None))
        return super().destroy_node()


def main(args=None):
    """Run the cognition node."""
    from sage_core.ros_common import run_node
    raise SystemExit(run_node(CognitionNode, args))
