"""Export one HRM segment to ONNX, and build TensorRT engines from it (with a cache).

ONNX graph (opset 18, batch dimension dynamic)::

    inputs : inputs   [B, seq_len] int64         (token ids)
             z_H, z_L [B, T', hidden] float32   (T' = seq_len + puzzle embedding rows)
             puzzle_identifiers [B] int64        (only when puzzle_emb_ndim > 0)
    outputs: z_H_out, z_L_out, logits [B, seq_len, vocab], q_halt, q_continue [B]

The caller loops segments and applies ACT halting (see ``sage_hrm.inference``); a
fresh carry is ``H_init``/``L_init`` broadcast (``initial_state``).

TensorRT (Jetson: TensorRT ships with JetPack; ``import tensorrt`` must work in the
Python that runs SAGE, e.g. a venv created with ``--system-site-packages``). Engines are
specific to a GPU and a TensorRT version, so ``build_engine`` caches them under
``cache_dir/<gpu>-trt<version>-<onnx sha256[:16]>-b<max_batch>[-fp16].engine`` and
rebuilds only when one of those changes. Where TensorRT is absent it raises
:class:`TensorRTUnavailable` with instructions.
"""

from __future__ import annotations

import os
import re

import numpy as np
import torch
from torch import nn

from sage_common.checkpoints import sha256_file
from sage_hrm.model import HRM, InnerCarry


class _Segment(nn.Module):
    def __init__(self, model: HRM):
        super().__init__()
        self.model = model

    def forward(self, inputs, z_H, z_L, puzzle_identifiers=None):
        inner = self.model.inner
        x = inner.embed(inputs, puzzle_identifiers)
        carry, z, (qh, qc) = inner(InnerCarry(z_H, z_L), x)
        logits = inner.lm_head(z)[:, inner.puzzle_emb_len:]
        return carry.z_H, carry.z_L, logits, qh, qc


def initial_state(model: HRM, batch: int, device=None) -> tuple:
    """Return the learned initial carry (z_H, z_L) for ``batch`` samples (float32)."""
    inner = model.inner
    t = model.config.seq_len + inner.puzzle_emb_len
    zeros = torch.zeros(batch, t, model.config.hidden_size, device=device)
    c = inner.reset_carry(torch.ones(batch, dtype=torch.bool, device=device),
                          InnerCarry(zeros, zeros.clone()))
    return c.z_H, c.z_L


def export_graph(module: nn.Module, args: tuple, inputs: list[str], outputs: list[str],
                 path: str) -> str:
    """Export ``module`` to ONNX: the one exporter of SAGE.

    Opset 18, every input and output batch-dynamic, written atomically (a reader never
    sees half a file). Used for the HRM segment here and the coherence model's
    (sage_coherence.runtime).
    """
    tmp = _temp_beside(path)            # its own name: two exporters never share a file
    try:
        with torch.no_grad():
            torch.onnx.export(module.eval(), tuple(args), tmp, input_names=inputs,
                              output_names=outputs, opset_version=18, dynamo=False,
                              dynamic_axes={n: {0: 'batch'} for n in inputs + outputs})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _temp_beside(path: str) -> str:
    import tempfile
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    os.close(fd)
    return tmp


def export_onnx(model: HRM, path: str, batch: int = 2) -> str:
    """Write one segment of ``model`` (token input, float32) to ``path``; return it."""
    if model.config.vocab_size <= 0:
        raise ValueError('ONNX export of the HRM core needs a token vocabulary '
                         '(the coherence model exports its own graph)')
    model = model.eval().float()
    seg = _Segment(model)
    z_H, z_L = initial_state(model, batch)
    args = [torch.zeros(batch, model.config.seq_len, dtype=torch.int64), z_H, z_L]
    names = ['inputs', 'z_H', 'z_L']
    if model.config.puzzle_emb_ndim > 0:
        args.append(torch.zeros(batch, dtype=torch.int64))
        names.append('puzzle_identifiers')
    outs = ['z_H_out', 'z_L_out', 'logits', 'q_halt', 'q_continue']
    return export_graph(seg, tuple(args), names, outs, path)


class TensorRTUnavailable(RuntimeError):
    """TensorRT (or a CUDA GPU) is not available on this machine."""


def engine_cache_key(onnx_path: str, gpu_name: str, trt_version: str, fp16: bool,
                     max_batch: int = 64) -> str:
    """File-name-safe cache key: GPU name, TensorRT version, model (ONNX) hash, options."""
    gpu = re.sub(r'[^A-Za-z0-9]+', '_', gpu_name).strip('_')
    ver = re.sub(r'[^A-Za-z0-9.]+', '_', trt_version)
    return f'{gpu}-trt{ver}-{sha256_file(onnx_path)[:16]}-b{max_batch}' + ('-fp16' if fp16 else '')


def build_engine(onnx_path: str, cache_dir: str, max_batch: int = 64, fp16: bool = True,
                 workspace_mb: int = 1024, log=print) -> str:
    """Build (or reuse from the cache) a TensorRT engine for the ONNX segment; return its path."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(
            'TensorRT is not installed: `import tensorrt` failed. On a Jetson, use the '
            'TensorRT of JetPack (python3-libnvinfer; create the venv with '
            '--system-site-packages); on x86 with an NVIDIA GPU, `pip install tensorrt`. '
            'Without TensorRT use the onnxruntime or torch backend.') from e
    if not torch.cuda.is_available():
        raise TensorRTUnavailable('TensorRT needs a CUDA GPU; none is visible to torch')
    path = os.path.join(cache_dir, engine_cache_key(
        onnx_path, torch.cuda.get_device_name(), trt.__version__, fp16, max_batch) + '.engine')
    if os.path.exists(path):
        log(f'TensorRT engine from cache: {path}')
        return path
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, 'rb') as f:
        if not parser.parse(f.read()):
            errs = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f'TensorRT could not parse {onnx_path}: {errs}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        shape = list(inp.shape)
        lo, opt, hi = ([1] + shape[1:], [max(1, max_batch // 2)] + shape[1:],
                       [max_batch] + shape[1:])
        profile.set_shape(inp.name, lo, opt, hi)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError('TensorRT engine build failed (see the TensorRT log above)')
    tmp = _temp_beside(path)
    with open(tmp, 'wb') as f:
        f.write(engine)
    os.replace(tmp, path)
    log(f'TensorRT engine built: {path}')
    return path


class TensorRTSession:
    """Run a TensorRT engine like an ONNX Runtime session: ``run(None, feeds)`` -> outputs.

    Feeds are numpy arrays (names as exported); outputs come back as numpy arrays in
    the engine's output order (the ONNX graph's). Buffers live on the GPU as torch
    tensors; one CUDA stream, synchronised per call (a control cycle needs the answer).
    """

    def __init__(self, engine_path: str):
        import tensorrt as trt
        if not torch.cuda.is_available():
            raise TensorRTUnavailable('TensorRT needs a CUDA GPU; none is visible to torch')
        with open(engine_path, 'rb') as f:
            self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(
                f.read())
        if self.engine is None:
            raise RuntimeError(f'{engine_path}: TensorRT could not load the engine (built '
                               'for another GPU or TensorRT version? delete it to rebuild)')
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names
                       if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self._dtypes = {n: torch.from_numpy(np.zeros(0, trt.nptype(
            self.engine.get_tensor_dtype(n)))).dtype for n in names}
        self.stream = torch.cuda.Stream()

    def run(self, output_names, feeds: dict) -> list:
        """Execute once; ``output_names`` is ignored (all outputs, in order), as in ORT."""
        with torch.cuda.stream(self.stream):
            keep = []
            for name in self.inputs:
                t = torch.as_tensor(feeds[name]).to('cuda', self._dtypes[name]).contiguous()
                keep.append(t)
                self.context.set_input_shape(name, tuple(t.shape))
                self.context.set_tensor_address(name, t.data_ptr())
            outs = []
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                t = torch.empty(shape, dtype=self._dtypes[name], device='cuda')
                outs.append(t)
                self.context.set_tensor_address(name, t.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError('TensorRT execution failed')
        self.stream.synchronize()
        return [t.cpu().numpy() for t in outs]
