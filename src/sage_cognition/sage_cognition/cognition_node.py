"""The cognition node: language as a trust-weighted sensor of possible futures.

Inputs are data: sage/instruction (a person, speech recognition or another
stack), and, for the prompt, the coherence state (sage/coherence), the memory's
recall confidence (sage/features/memory) and salience (sage/salience); the
Think action's ``context`` (e.g. a transcript) is data too. With
backend ``none`` the node encodes the instruction itself (the plan); with
``local`` (SmolLM2-135M, embedded) or ``openai`` (any OpenAI-compatible server)
a language model thinks about it. It thinks on a new instruction, when salience
crosses ``salience_threshold``, or every ``think_period_s``, never per frame,
and always in a worker thread, never on the executor. Each thought is
published as text on sage/cognition/<name>/text and as a sentence-embedding
Feature on sage/features/cognition_<name> (re-published at ``republish_hz``
with its original stamp), its trust computed by sage_cognition.thought
(rewards count only within ``reward_window_s`` after a thought); diagnostics
say what lowered it.
With ``plan: true`` and a model, the node plans instead of musing: each new
instruction becomes a structured plan under constrained decoding
(sage_cognition.plan: ordered steps such as go_to, go_near, go_except, return), in
the worker thread; the node follows it with the memory's places feature
(sage/features/places), odometry (``odom``) and the reward, and publishes the
current step as the feature (its sentence embedding, in the instruction's space)
and the plan and its progress as JSON on sage/cognition/<name>/plan (latched). A
plan that failed falls back to the instruction's embedding at half the trust.
A planner does not read sage/coherence, sage/salience or sage/features/memory (a plan
needs none of them; sage/coherence comes once per camera frame), so its Think goals
are prompted without that state. The node spins one thread: Think goals are
coroutines that wait for the worker, which streams their feedback.

The Think action (sage/cognition/<name>/think) streams a thought token by token
and can be cancelled. The node has no publisher that can move the robot.

Each finished thought (with a model: backend ``local`` or ``openai``) is
recorded as one JSON line of ``exchanges_path`` (sage_cognition.exchanges:
messages, answer, trust, and the mean reward in its reward window, so it is
written once that window has passed), which the sleep node's LoRA target learns
from. Only the worker thread writes it; a write error is logged and counted
(diagnostics ``exchange_write_errors``) and the node thinks on.
With the embedded model, an announced ``lora`` checkpoint (sage/checkpoint)
is hot-swapped between thoughts: either a sleep checkpoint version directory
(weights.pt holding a sage-lora-1 state, checked against the announced
sha256 and unpacked into a peft adapter in a temporary folder) or a peft
adapter directory (adapter_model.safetensors checked).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
import os
import queue
import shutil
import threading
import time

import numpy as np
from rclpy.action import CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from sage_msgs.action import Think
from sage_msgs.msg import Checkpoint, Coherence, Feature, Salience
from nav_msgs.msg import Odometry
from std_msgs.msg import Float32, String

from sage_common.checkpoints import sha256_file, superseded
from sage_cognition.backends import BackendError, make_backend
from sage_cognition.exchanges import ExchangeLog
from sage_cognition.plan import Planner, PlanSensing, plan_json
from sage_cognition.text import sanitize
from sage_cognition.thought import build_messages, coherence_summary, thought_trust, why
from sage_common.paths import inside, resolve_path
from sage_ros.guard import GuardedNode, guarded_action_server
from sage_ros.common import (Diagnostics, Param, declare_parameters, make_feature, qos_from_name,
                             stamp, wait_for_thread)


PARAMS = [
    Param('name', 'main', 'instance name: topics sage/cognition/<name>/text and '
          'sage/features/cognition_<name>',
          check=lambda v: None if v.isidentifier() else 'name must be an identifier'),
    Param('backend', 'none', 'what thinks: none = encode the instruction itself; local = '
          'an embedded model (local_model); openai = an OpenAI-compatible server',
          choices=('none', 'local', 'openai')),
    Param('local_model', 'smollm2', 'local backend: smollm2 (SmolLM2-135M-Instruct) or '
          'gemma3 (Gemma 3 270M)', choices=('smollm2', 'gemma3')),
    Param('plan', False, 'with a model: turn each instruction into a plan under constrained '
          'decoding and publish its current step (false: free-text thoughts)'),
    Param('constrained', True, 'plan: constrain decoding to the plan schema (false: parse '
          'whatever the model writes)'),
    Param('url', 'http://127.0.0.1:8000', 'openai backend: server base URL'),
    Param('model', 'SmolLM2-135M-Instruct', 'openai backend: model name'),
    Param('timeout_s', 30.0, 'openai backend: per-request timeout', low=0.1, high=600.0),
    Param('retries', 2, 'openai backend: retries on connection errors and 5xx', low=0, high=10),
    Param('stream', True, 'openai backend: stream tokens (server-sent events) or wait for '
          'the whole answer'),
    Param('threads', 1, 'local backend: CPU threads for generation (0 = torch default); one '
          'is fastest on a small CPU shared with the rest of the graph', low=0, high=256),
    Param('max_tokens', 32, 'longest thought, tokens', low=1, high=2048),
    Param('latency_budget_s', 10.0, 'thoughts slower than this lose trust', low=0.1,
          high=600.0),
    Param('think_period_s', 60.0, 'think again at least this often (0 = only on events)',
          low=0.0, high=86400.0),
    Param('salience_threshold', 0.8, 'think when salience reaches this', low=0.0, high=1.0),
    Param('min_interval_s', 5.0, 'never think more often than this', low=0.0, high=3600.0),
    Param('peers', [''], 'names of other cognition nodes to compare thoughts with'),
    Param('reward_window_s', 30.0, 'rewards this soon after a thought count for (or against) '
          'its trust', low=0.0, high=3600.0),
    Param('republish_hz', 2.0, 'rate at which the standing plan is re-published',
          low=0.1, high=50.0),
    Param('max_chars', 240, 'longest instruction or thought kept, characters', low=8,
          high=10000),
    Param('model_dir', 'models', 'checkpoint root: LoRA adapters announced on sage/checkpoint '
          'are loaded only from under it (relative: under $SAGE_HOME)'),
    Param('exchanges_path', 'memory/exchanges.jsonl', 'JSON lines of finished thoughts '
          '(messages, answer, trust, reward after) that sleep trains LoRA on; relative to '
          '$SAGE_HOME; empty = off (never written with backend none)'),
]


class CognitionNode(GuardedNode):
    """See the module doc."""

    def __init__(self, **kwargs):
        super().__init__(kwargs.pop('node_name', 'cognition'), **kwargs)
        self.p = declare_parameters(self, PARAMS)
        name = self.p['name']
        self.modality = f'cognition_{name}'
        self.diag = Diagnostics(self)
        self.backend = make_backend(self.p['backend'], self.p['url'], self.p['model'],
                                    self.p['timeout_s'], self.p['retries'],
                                    stream=self.p['stream'], threads=self.p['threads'],
                                    local_model=self.p['local_model'])
        self.planning = self.backend is not None and self.p['plan']
        self.pub_feature = self.create_publisher(Feature, f'sage/features/{self.modality}', 10)
        self.pub_text = self.create_publisher(String, f'sage/cognition/{name}/text', 10)
        self.create_subscription(String, 'sage/instruction', self._on_instruction,
                                 qos_from_name('LATCHED'))
        self.state: dict = {}
        self.plan = PlanSensing(
            Planner(self.backend, self.p['constrained'], max_chars=self.p['max_chars'])
            if self.planning else None, latency_budget_s=self.p['latency_budget_s'],
            max_chars=self.p['max_chars'])
        self._plan_lock = threading.Lock()     # the worker starts plans, the executor follows
        self.pose = (0.0, 0.0, 0.0)
        self.reward = 0.0
        self.instruction = ''
        self._instruction_heard = -1e9
        if self.planning:
            self.pub_plan = self.create_publisher(String, f'sage/cognition/{name}/plan',
                                                  qos_from_name('LATCHED'))
            self.create_subscription(Feature, 'sage/features/places', self._on_places,
                                     qos_from_name('SENSOR_DATA'))
            self.create_subscription(Odometry, 'odom', self._on_odom,
                                     qos_from_name('SENSOR_DATA'))
        if self.backend is not None:
            if not self.planning:   # a musing's triggers and prompt; a plan needs neither, and
                #                     sage/coherence alone comes once per camera frame
                self.create_subscription(Salience, 'sage/salience', self._on_salience, 10)
                self.create_subscription(Coherence, 'sage/coherence', self._on_coherence, 10)
                self.create_subscription(Feature, 'sage/features/memory', self._on_memory, 10)
            self.create_subscription(Float32, 'sage/reward', self._on_reward, 10)
            for peer in filter(None, self.p['peers']):
                self.create_subscription(Feature, f'sage/features/cognition_{peer}',
                                         self._on_peer, 10)
            if hasattr(self.backend, 'load_adapter'):      # the embedded model takes LoRA
                self.create_subscription(Checkpoint, 'sage/checkpoint', self._on_checkpoint,
                                         qos_from_name('LATCHED'))
            guarded_action_server(self, Think, f'sage/cognition/{name}/think',
                                  self._think_action,
                                  goal_callback=lambda _: GoalResponse.ACCEPT,
                                  cancel_callback=lambda _: CancelResponse.ACCEPT,
                                  callback_group=ReentrantCallbackGroup())
        self.current: Feature | None = None
        self.previous: np.ndarray | None = None
        self.peer_vectors: dict[str, np.ndarray] = {}
        self.rewards: list[float] = []
        self.thoughts = self.failures = self.exchange_errors = 0
        self.exchange_error = ''
        path = resolve_path(self.p['exchanges_path'])
        self.exchanges = (ExchangeLog(path, self.p['reward_window_s'])
                          if path and self.backend is not None else None)
        self.adapter_checkpoint = ''      # the checkpoint whose LoRA adapter is in use
        self._unpacked = ''               # temporary adapter folder unpacked from it
        self._swap_lock = threading.Lock()
        self.busy = False
        self.last_thought = self.last_published = -1e9
        self._jobs: queue.Queue = queue.Queue(maxsize=4)
        self._stopping = threading.Event()      # ends a thought being generated at shutdown
        self._worker = threading.Thread(target=self._work, daemon=True)
        self._worker.start()
        self.create_timer(1.0 / self.p['republish_hz'], self._republish)
        self.diag.set('OK', 'loading models')

    # ----------------------------------------------------------------- events
    def _on_instruction(self, msg: String) -> None:
        text = self.plan.sensing.clean(msg.data)
        if not text:
            self.diag.set('WARN', 'ignored an empty or unprintable instruction')
            return
        now = time.monotonic()
        repeated = text == self.instruction and now - self._instruction_heard < 1.0
        self._instruction_heard = now
        if repeated:        # the same words re-sent (a world holding its first frame): one task
            return
        self.instruction = text
        self._submit(('instruction', text, stamp(self), None))

    def _on_salience(self, msg: Salience) -> None:
        self.state['salience'] = float(msg.total)
        if msg.total >= self.p['salience_threshold'] and self.instruction:
            self._submit(('salience', self.instruction, stamp(self), None))

    def _on_coherence(self, msg: Coherence) -> None:
        self.state['coherence'] = coherence_summary(
            float(msg.score), list(msg.modalities), [float(t) for t in msg.trust_used],
            msg.act_steps)

    def _on_memory(self, msg: Feature) -> None:
        self.state['memory recall confidence'] = float(msg.trust)

    def _on_odom(self, msg: Odometry) -> None:
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        yaw = math.atan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y * q.y + q.z * q.z))
        if all(map(math.isfinite, (p.x, p.y, yaw))) and max(abs(p.x), abs(p.y)) < 1e6:
            self.pose = (float(p.x), float(p.y), yaw)
        else:
            self.diag.set('WARN', 'ignored odom: a position non-finite or beyond 1000 km')

    def _on_places(self, msg: Feature) -> None:
        """Follow the plan: a step done or resolved anew publishes the next one."""
        with self._plan_lock:
            if self.plan.follower is None:
                return
            data = np.asarray(msg.data, np.float32)
            if not np.all(np.isfinite(data)) or np.abs(data).max(initial=0.0) > 10.0:
                self.diag.set('WARN', 'ignored sage/features/places: numbers non-finite or '
                              'beyond 10 (tokens hold values near [-1.5, 1.5])')
                return
            try:
                sensed = self.plan.follow(data, self.pose,
                                          self.reward, stamp(self))
            except ValueError as exc:
                self.diag.set('WARN', f'ignored a bad sage/features/places: {exc}')
                return
            self.reward = 0.0            # an arrival reward counts once
            if sensed is not None:
                self._publish_plan_step(sensed, 'step')

    def _publish_plan_step(self, sensed, event: str) -> None:
        follower, result = self.plan.follower, self.plan.result
        text = follower.text() if follower is not None else self.instruction
        self._publish(text, sensed.vector, sensed.trust, sensed.stamp_s, sensed.quality,
                      '' if follower is not None else f'no plan: {result.error[:80]}')
        self.pub_plan.publish(String(data=json.dumps({
            'instruction': self.plan.instruction, 'valid': follower is not None,
            'plan': plan_json(follower.steps) if follower is not None else result.text,
            'step': follower.index if follower is not None else -1,
            'target': follower.target if follower is not None else '',
            'now': text, 'event': event, 'cached': result.cached,
            'latency_s': round(result.latency_s, 3), 'error': result.error})))

    def _on_reward(self, msg: Float32) -> None:
        if self.planning and np.isfinite(msg.data):
            self.reward = max(self.reward, float(msg.data))
        followed = time.monotonic() - self.last_published < self.p['reward_window_s']
        if np.isfinite(msg.data) and followed:          # reward that followed our thoughts
            self.rewards = (self.rewards + [float(msg.data)])[-200:]
            if self.exchanges is not None:
                self.exchanges.reward(float(msg.data))   # memory only; the worker writes

    def _on_peer(self, msg: Feature) -> None:
        self.peer_vectors[msg.modality] = np.asarray(msg.data, np.float32)

    def _on_checkpoint(self, msg: Checkpoint) -> None:
        if msg.model == 'lora':
            threading.Thread(target=self._swap_adapter, args=(msg,), daemon=True).start()

    def _swap_adapter(self, msg: Checkpoint) -> None:
        """Load a new LoRA adapter off the executor; the backend swaps between thoughts."""
        with self._swap_lock:
            if superseded(msg.path):    # e.g. a latched re-delivery after a respawn
                self.get_logger().info(f'ignored announced LoRA {msg.path}: the store\'s '
                                       f'latest has moved on')
                return
            unpacked = ''
            try:
                root = resolve_path(self.p['model_dir'])
                if not inside(msg.path, root):      # an announcement is not a command
                    raise BackendError(f'it is not under model_dir {root}')
                if os.path.isfile(os.path.join(msg.path, 'weights.pt')):   # a sleep checkpoint
                    from sage_cognition.lora import unpack_checkpoint
                    unpacked = unpack_checkpoint(msg.path, msg.sha256,
                                                 f'sage-lora-v{msg.version}-')
                    self.backend.load_adapter(unpacked)
                else:                                                     # a peft directory
                    weights = os.path.join(msg.path, 'adapter_model.safetensors')
                    if msg.sha256 and sha256_file(weights) != msg.sha256:
                        raise BackendError('its weights do not match the announced sha256')
                    self.backend.load_adapter(msg.path)
            except (BackendError, OSError, ValueError) as exc:
                if unpacked:
                    shutil.rmtree(os.path.dirname(unpacked), ignore_errors=True)
                kept = self.adapter_checkpoint or self.backend.adapter or 'the base model'
                self.get_logger().error(f'refused LoRA adapter {msg.path}: {exc}; keeping '
                                        f'{kept}')
                self.diag.set('WARN', f'refused LoRA adapter: {exc}', refused=msg.path)
                return
            if self._unpacked and self._unpacked != unpacked:     # the previous one's folder
                shutil.rmtree(os.path.dirname(self._unpacked), ignore_errors=True)
            self._unpacked, self.adapter_checkpoint = unpacked, msg.path
        what = 'the base model (no adapter)' if self.backend.adapter is None else msg.path
        self.get_logger().info(f'LoRA adapter v{msg.version} in use: {what}')
        self.diag.set('OK', f'LoRA adapter v{msg.version} in use', adapter=msg.path)

    def _submit(self, job) -> bool:
        if job[0] == 'salience' and \
                time.monotonic() - self.last_thought < self.p['min_interval_s']:
            return False                 # salience spikes come in bursts: one thought each
        try:
            self._jobs.put_nowait(job)
            return True
        except queue.Full:
            self.diag.set('WARN', 'thoughts are requested faster than they are made')
            return False

    # ----------------------------------------------------------------- the worker
    def _work(self) -> None:
        from sage_cognition.embedding import embed
        start = time.monotonic()
        embed('warm up')            # load models off the executor thread
        embedded = time.monotonic()
        if hasattr(self.backend, 'load'):        # the embedded model
            try:
                if self.plan.planner is not None:    # the first plan waits for none of it
                    self.plan.planner.prepare()
                else:
                    self.backend.load()
            except BackendError as exc:
                self.diag.set('ERROR', f'backend {self.p["backend"]}: {exc}')
        self.diag.set('OK', 'ready')
        self.get_logger().info(f'ready: sentence embedding in {embedded - start:.1f} s, '
                               f'then the language model in {time.monotonic() - embedded:.1f} s')
        while True:
            self._write_exchanges()
            try:
                job = self._jobs.get(timeout=1.0)
            except queue.Empty:
                period = self.p['think_period_s']
                if period and self.instruction and self.backend is not None and \
                        not self.planning and time.monotonic() - self.last_thought > period:
                    job = ('period', self.instruction, stamp(self), None)
                else:
                    continue
            kind, text, when, action = job
            if kind is None:
                self._write_exchanges(force=True)
                return
            if self.backend is None:        # the instruction itself, as training sees it
                sensed = self.plan.sensing.step(text, 0.0)
                self._publish(text, sensed.vector, sensed.trust, when, sensed.quality)
                continue
            if self.planning and kind == 'instruction':
                self._plan(text, when)
                continue
            self._think(text, when, embed, action)

    def _plan(self, text, when) -> None:
        """Plan a new instruction (the model thinks here, off the executor).

        Until the plan is ready the instruction's own embedding stands in (as with
        backend none), so the robot never follows the previous instruction meanwhile.
        """
        with self._plan_lock:
            sensed = self.plan.start(text, None, when)      # no plan yet: the words alone
            self._publish(text, sensed.vector, sensed.trust, when, sensed.quality)
        self.busy = True
        try:
            result = self.plan.plan(text, self._stopping.is_set)
        finally:
            self.busy = False
        if result.steps is None:
            self.failures += 1
        with self._plan_lock:
            self.reward = 0.0
            sensed = self.plan.start(text, result, when)
            self._publish_plan_step(sensed, 'planned')

    def _think(self, instruction, when, embed, action=None) -> None:
        """Think once, with ``busy`` set while it lasts."""
        self.busy = True
        try:
            self._think_once(instruction, when, embed, action)
        finally:
            self.busy = False

    def _think_once(self, instruction, when, embed, action=None) -> None:
        """One thought: generate, sanitise, embed, score trust, publish (and answer Think)."""
        self.last_thought = time.monotonic()
        partial = []

        def on_token(piece):
            partial.append(piece)
            if action is not None:
                action['goal'].publish_feedback(Think.Feedback(
                    partial_text=''.join(partial)[:self.p['max_chars']], tokens=len(partial)))
        stop = (lambda: self._stopping.is_set() or action['goal'].is_cancel_requested) \
            if action else self._stopping.is_set
        state = self.state.copy()                     # the executor keeps updating it
        if action is not None and action.get('context'):
            state['context'] = action['context']
        messages = build_messages(instruction, state, self.p['max_chars'])
        max_tokens = (action or {}).get('max_tokens') or self.p['max_tokens']
        try:
            thought = self.backend.generate(messages, max_tokens, on_token, stop)
        except BackendError as exc:
            self.failures += 1
            self.diag.set('WARN', f'backend failed: {exc}', failures=self.failures)
            if self.current is not None:          # the standing plan loses trust
                self.current.trust = float(self.current.trust) * 0.5
            if action is not None:
                action['done'].set_result(('', 0.0, 0.0, False, str(exc)))
            return
        text = sanitize(thought.text, self.p['max_chars'])
        vector = embed(text or ' ')
        reward_avg = float(np.mean(self.rewards)) if self.rewards else None
        scored = thought_trust(text, thought.latency_s, self.p['latency_budget_s'], vector,
                               self.previous, list(self.peer_vectors.values()), reward_avg)
        if not thought.cancelled:
            self.previous = vector
            if self.exchanges is not None:
                self.exchanges.add({
                    't': time.time(), 'name': self.p['name'], 'backend': self.p['backend'],
                    'messages': messages, 'answer': text, 'trust': scored['trust'],
                    'latency_s': thought.latency_s, 'tokens': int(thought.tokens),
                    'reward_before': reward_avg})
            if not self.planning:        # a planner's feature is its plan, not a musing
                self._publish(text, vector, scored['trust'], when,
                              {**{k: v for k, v in scored.items() if k != 'trust'},
                               'latency_s': thought.latency_s,
                               'tokens': float(thought.tokens)},
                              why(scored, thought.latency_s, self.p['latency_budget_s']))
        if action is not None:
            action['done'].set_result((text, scored['trust'], thought.latency_s,
                                       thought.cancelled, ''))

    def _write_exchanges(self, force: bool = False) -> None:
        """Append the thoughts whose reward window has passed (worker thread only)."""
        if self.exchanges is None:
            return
        try:
            written = self.exchanges.flush(force=force)
        except OSError as exc:
            self.exchange_errors = self.exchanges.errors
            self.exchange_error = f'cannot record exchanges: {exc}'   # shown until one works
            self.get_logger().error(f'cannot record exchanges in {self.exchanges.path}: '
                                    f'{exc}')
            self.diag.set('WARN', self.exchange_error,
                          exchange_write_errors=self.exchange_errors)
        else:
            if written:                  # an empty flush proves nothing: keep the error up
                self.exchange_error = ''

    def _publish(self, text, vector, trust, when, quality, reasons='') -> None:
        self.current = make_feature(self, self.modality, vector, trust, quality,
                                    header_stamp=when)
        self.thoughts += 1
        self.last_published = time.monotonic()
        self.pub_text.publish(String(data=text))
        self.pub_feature.publish(self.current)
        problem = f'; {self.exchange_error}' if self.exchange_error else ''
        self.diag.set('OK' if trust > 0.2 and not problem else 'WARN',
                      f'thought (trust {trust:.2f}' + (f': {reasons})' if reasons else ')') +
                      f': {text[:60]}{problem}', thoughts=self.thoughts, trust=trust,
                      failures=self.failures, low_trust_because=reasons or 'n/a',
                      exchange_write_errors=self.exchange_errors)

    async def _think_action(self, goal):
        """Think about the goal's instruction; stream tokens as feedback; cancellable."""
        request = goal.request
        instruction = sanitize(request.instruction or self.instruction, self.p['max_chars'])
        done = concurrent.futures.Future()      # the worker sets it
        job = ('think', instruction, stamp(self),
               {'goal': goal, 'done': done, 'max_tokens': int(request.max_tokens),
                'context': sanitize(request.context, self.p['max_chars'])})
        if not instruction or not self._submit(job):
            goal.abort()
            return Think.Result(text='', trust=0.0, latency_s=0.0)
        text, trust, latency, cancelled, error = await wait_for_thread(done)
        if cancelled:
            goal.canceled()
        elif error:
            goal.abort()
        else:
            goal.succeed()
        return Think.Result(text=text, trust=trust, latency_s=latency)

    def _republish(self) -> None:
        if self.current is not None:
            self.pub_feature.publish(self.current)

    def destroy_node(self):
        """Stop the worker, write the exchanges still in their reward window, destroy."""
        self._stopping.set()
        while True:              # the stop job goes in even when the queue is full
            try:
                self._jobs.put_nowait((None, None, None, None))
                break
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._jobs.get_nowait()
        self._worker.join(timeout=2.0)   # a thought stops at its next token; an encode ends
        if self._unpacked:               # the LoRA adapter unpacked for this run
            shutil.rmtree(os.path.dirname(self._unpacked), ignore_errors=True)
        self._write_exchanges(force=True)
        return super().destroy_node()


def main(args=None):
    """Run the cognition node."""
    from sage_ros.common import run_node
    raise SystemExit(run_node(CognitionNode, args))
