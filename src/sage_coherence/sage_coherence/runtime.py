"""Run the coherence model one control cycle at a time, on a chosen backend.

A runtime owns a model version and its recurrent carry. ``step`` fuses one
snapshot of features: it thinks segment by segment (ACT) until the halting
head is confident, ``max_segments`` is reached or the cycle's time budget
would be exceeded (the ATP budget), and returns a Decision.

Backends, in fallback order: ``tensorrt`` (an engine built from the ONNX
graph, Jetson/GPU), ``onnxruntime`` (CPU or CUDA), ``torch``. Asking for one
that is not installed falls back to the next with a logged reason.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from dataclasses import dataclass

import numpy as np
import torch

from sage_common.checkpoints import Checkpoint, CheckpointError, CheckpointStore
from sage_hrm.act import SegmentClock, think
from sage_hrm.export import export_graph

from sage_coherence.model import CoherenceConfig, CoherenceModel

BACKENDS = ('torch', 'onnxruntime', 'tensorrt')
log = logging.getLogger('sage.coherence')


class RuntimeRefused(RuntimeError):
    """A model could not be loaded or failed its sanity check; the old one stays."""


@dataclass
class Decision:
    """The outcome of one control cycle."""

    action_id: int
    action_name: str
    continuous: tuple
    confidence: float
    trust_used: np.ndarray
    score: float
    act_steps: int
    budget_exhausted: bool
    latency_ms: float


def command(cfg: CoherenceConfig, action: int, regressed) -> tuple:
    """Return the (v, w) to send: the discrete action's, else the regressed command."""
    if cfg.action_values:
        return tuple(float(x) for x in cfg.action_values[action])
    return tuple(float(x) for x in regressed)


class TorchRuntime:
    """The coherence model on torch (CPU or CUDA)."""

    backend = 'torch'

    def __init__(self, model: CoherenceModel, version: str, device: str = 'cpu'):
        self.model = model.to(device).eval()
        self.cfg = model.cfg
        self.version = version
        self.device = device
        self.modalities = list(self.cfg.modalities)
        self.dims = dict(self.cfg.modalities)
        self.clock = SegmentClock()   # segment time estimate: stop before the budget is blown
        self.reset()

    def reset(self) -> None:
        """Forget the recurrent state (new episode or after a long gap)."""
        self.carry = self.model.initial_carry(1, self.device)

    def _inputs(self, vectors: dict, trust, age):
        x = np.concatenate([np.asarray(vectors[m], np.float32) for m in self.modalities])
        as_t = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=self.device)[None]  # noqa
        return as_t(x), as_t(trust), as_t(age)

    @torch.inference_mode()
    def step(self, vectors: dict, trust, age, budget_ms: float = math.inf,
             uniform_trust: bool = False) -> Decision:
        """Fuse one snapshot; see the module doc."""
        start = time.perf_counter()
        x, t, a = self._inputs(vectors, trust, age)
        tokens, trust_used, mask = self.model.tokens(x, t, a, uniform_trust)
        out = {}

        def segment() -> bool:
            self.carry, seg = self.model.segment(self.carry, tokens, mask)
            out.update(seg)
            return bool(torch.sigmoid(seg['halt_logit'])[0] > 0.5)
        steps, exhausted = think(segment, self.cfg.max_segments, budget_ms / 1e3, self.clock)
        probs = torch.softmax(out['action_logits'][0], -1)
        action = int(probs.argmax())
        return Decision(action, self.cfg.actions[action],
                        command(self.cfg, action, out['continuous'][0].tolist()),
                        float(probs[action]),
                        trust_used[0].cpu().numpy(), float(out['coherence'][0]), steps,
                        exhausted, (time.perf_counter() - start) * 1e3)


class OnnxRuntime(TorchRuntime):
    """The same cycle loop with the token+segment graph running in ONNX Runtime."""

    backend = 'onnxruntime'

    def __init__(self, model: CoherenceModel, version: str, onnx_path: str,
                 device: str = 'cpu', session=None):
        if session is None:
            import onnxruntime as ort
            providers = (['CUDAExecutionProvider'] if device == 'cuda' else []) + \
                ['CPUExecutionProvider']
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            session = ort.InferenceSession(onnx_path, opts, providers=providers)
        self.session = session
        super().__init__(model, version, 'cpu')

    def reset(self) -> None:
        """Fresh carry as numpy arrays."""
        carry = self.model.initial_carry(1)
        self.z = (carry.z_H.numpy(), carry.z_L.numpy())

    def step(self, vectors: dict, trust, age, budget_ms: float = math.inf,
             uniform_trust: bool = False) -> Decision:
        """Fuse one snapshot through ONNX Runtime."""
        if uniform_trust:
            raise ValueError('uniform_trust is a torch-backend diagnostic')
        start = time.perf_counter()
        x, t, a = (v.numpy() for v in self._inputs(vectors, trust, age))
        out = []

        def segment() -> bool:
            out[:] = self.session.run(None, {'features': x, 'trust': t, 'age': a,
                                             'z_H': self.z[0], 'z_L': self.z[1]})
            self.z = (out[5], out[6])
            return float(out[3][0]) > 0.0          # sigmoid > 0.5, without overflow
        steps, exhausted = think(segment, self.cfg.max_segments, budget_ms / 1e3, self.clock)
        logits, cont, coh, _, trust_used = out[:5]
        p = np.exp(logits[0] - logits[0].max())
        p /= p.sum()
        action = int(p.argmax())
        return Decision(action, self.cfg.actions[action],
                        command(self.cfg, action, cont[0].tolist()), float(p[action]),
                        trust_used[0], float(coh[0]), steps, exhausted,
                        (time.perf_counter() - start) * 1e3)


class TensorRTRuntime(OnnxRuntime):
    """The same exported graph as a TensorRT engine (Jetson, NVIDIA GPUs).

    The engine is built on first use for this GPU and TensorRT version and cached
    beside the checkpoint (``engines/``), so later starts load it in a second.
    """

    backend = 'tensorrt'

    def __init__(self, model: CoherenceModel, version: str, onnx_path: str):
        from sage_hrm.export import TensorRTSession, build_engine
        engine = build_engine(onnx_path, os.path.join(os.path.dirname(onnx_path), 'engines'),
                              max_batch=1, fp16=False, log=log.info)
        super().__init__(model, version, onnx_path, session=TensorRTSession(engine))


class _Graph(torch.nn.Module):
    """tokens + one segment with the carry as explicit inputs/outputs, for export."""

    def __init__(self, model: CoherenceModel):
        super().__init__()
        self.model = model

    def forward(self, features, trust, age, z_H, z_L):
        from sage_hrm.model import InnerCarry
        carry, out = self.model(InnerCarry(z_H, z_L), features, trust, age)
        return (out['action_logits'], out['continuous'], out['coherence'], out['halt_logit'],
                out['trust_used'], carry.z_H, carry.z_L)


def export_onnx(model: CoherenceModel, path: str) -> str:
    """Export tokens + one segment to ONNX (opset 18, dynamic batch); return ``path``."""
    model = model.eval()
    carry = model.initial_carry(1)
    m = len(model.dims)
    args = (torch.zeros(1, model.feature_size), torch.ones(1, m), torch.zeros(1, m),
            carry.z_H, carry.z_L)
    names = ['features', 'trust', 'age', 'z_H', 'z_L']
    outputs = ['action_logits', 'continuous', 'coherence', 'halt', 'trust_used', 'z_H_out',
               'z_L_out']
    return export_graph(_Graph(model), args, names, outputs, path)


def build_model(cfg: CoherenceConfig) -> CoherenceModel:
    """Return a fresh (untrained) coherence model."""
    return CoherenceModel(cfg)


def sanity_check(runtime) -> None:
    """Refuse a model that gives wrong shapes or non-finite outputs on a neutral input."""
    vectors = {m: np.zeros(d, np.float32) for m, d in runtime.dims.items()}
    n = len(runtime.modalities)
    d = runtime.step(vectors, np.ones(n, np.float32), np.zeros(n, np.float32))
    runtime.reset()
    values = [*d.continuous, d.confidence, d.score, *d.trust_used]
    if not all(math.isfinite(float(v)) for v in values) or len(d.trust_used) != n:
        raise RuntimeRefused('model gives non-finite or mis-shaped outputs')


def load_runtime(path: str, modalities: list[str] | None = None, backend: str = 'torch',
                 device: str = 'cpu', expect_sha256: str | None = None, like=None):
    """Load a verified checkpoint into a runtime, falling back across backends.

    ``path`` is a model root (holding coherence/latest) or a version directory.
    ``modalities``: the node's configured modalities; the checkpoint must cover
    them. Raises RuntimeRefused with the reason on any problem.
    """
    if backend not in BACKENDS:
        raise RuntimeRefused(f'unknown backend {backend!r}; choose one of {BACKENDS}')
    if not path:
        raise RuntimeRefused('no model_dir given: train one with `sage train coherence`')
    try:
        ckpt = _open(path)
    except (CheckpointError, OSError) as exc:
        raise RuntimeRefused(str(exc)) from exc
    if expect_sha256 and ckpt.sha256 != expect_sha256:
        raise RuntimeRefused(f'{ckpt.path}: sha256 differs from the announced one')
    try:
        cfg = CoherenceConfig.from_dict(ckpt.meta['config'])
        model = build_model(cfg)
        model.load_state_dict(torch.load(ckpt.weights_path, map_location='cpu',
                                         weights_only=True))
    except Exception as exc:
        raise RuntimeRefused(f'{ckpt.path}: cannot load: {exc}') from exc
    if modalities and list(cfg.modalities) != list(modalities):
        raise RuntimeRefused(f'{ckpt.path} was trained on modalities {list(cfg.modalities)}, '
                             f'the node is configured with {list(modalities)}')
    if like is not None and list(cfg.actions) != list(like.cfg.actions):
        raise RuntimeRefused(f'{ckpt.path} has a different action set')
    version = f'v{ckpt.version:04d}'
    return _make(model, version, ckpt, backend, device)


BASE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'base')


def install_base(root: str) -> Checkpoint | None:
    """Commit the shipped base model if ``root`` holds no coherence model for its inputs.

    The base was trained by DAgger in the built-in world (its meta.json says how
    and what it scored). Returns None when the latest model there already takes the
    base's modalities; one trained on other modalities (an older SAGE's) stays as a
    version, and the base is committed after it.
    """
    import json
    store = CheckpointStore(root, 'coherence')
    with open(os.path.join(BASE_DIR, 'meta.json')) as f:
        meta = json.load(f)
    if store.versions():
        try:
            latest = store.open().meta.get('config', {}).get('modalities')
        except CheckpointError:
            latest = None           # a broken latest: the node reports it, nothing to fix here
        if latest is None or latest == meta['config']['modalities']:
            return None
    state = torch.load(os.path.join(BASE_DIR, 'weights.pt'), map_location='cpu',
                       weights_only=True)
    return store.commit(state, meta)


def _open(path: str) -> Checkpoint:
    root, name = os.path.split(os.path.normpath(path))
    if re.fullmatch(r'v\d{4,}', name):          # a version directory
        store_root, model = os.path.split(root)
        return CheckpointStore(store_root, model).open(int(name[1:]))
    return CheckpointStore(path, 'coherence').open()


def _make(model, version, ckpt, backend, device):
    """Return the first backend, in fallback order, that loads the model and passes."""
    order = BACKENDS[BACKENDS.index(backend)::-1]   # e.g. tensorrt -> onnxruntime -> torch
    for name in order:
        try:
            runtime = _backend(name, model, version, ckpt, device)
            sanity_check(runtime)       # an engine that loads can still compute garbage
            return runtime
        except RuntimeRefused:
            if name == 'torch':
                raise                   # the model itself is bad, not a backend
            log.warning('coherence backend %s gives bad outputs; falling back', name)
        except Exception as exc:  # each backend fails its own way (ORT's are plain Exceptions)
            log.warning('coherence backend %s unavailable (%s); falling back', name, exc)
    raise RuntimeRefused('no backend could load the model')


def _backend(name, model, version, ckpt, device):
    if name == 'torch':
        return TorchRuntime(model, version, device)
    onnx_path = os.path.join(ckpt.path, 'coherence.onnx')
    if not os.path.exists(onnx_path):
        export_onnx(model, onnx_path)
    if name == 'onnxruntime':
        return OnnxRuntime(model, version, onnx_path, device)
    return TensorRTRuntime(model, version, onnx_path)
