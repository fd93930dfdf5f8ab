"""HRM export: ONNX Runtime parity of one segment, TensorRT cache key and clear error."""

import os

import numpy as np
import pytest
import torch

from sage_hrm import export as E
from sage_hrm.model import HRM, HRMConfig

torch.set_num_threads(2)


@pytest.mark.parametrize('puzzle_emb', [0, 32])
def test_onnx_segment_parity(tmp_path, puzzle_emb):
    ort = pytest.importorskip('onnxruntime')
    torch.manual_seed(0)
    model = HRM(HRMConfig.tiny(seq_len=16, vocab_size=6, hidden_size=32,
                               puzzle_emb_ndim=puzzle_emb, num_puzzle_identifiers=4)).eval()
    with torch.no_grad():  # non-zero puzzle embeddings so that they matter
        if puzzle_emb:
            model.inner.puzzle_emb.weight.normal_()
    path = E.export_onnx(model, os.path.join(tmp_path, 'seg.onnx'))
    sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    b = 5                                                  # batch differs from export's 2
    ids = torch.randint(0, 6, (b, 16), dtype=torch.int64)
    z_H, z_L = E.initial_state(model, b)
    feeds = {'inputs': ids.numpy(), 'z_H': z_H.numpy(), 'z_L': z_L.numpy()}
    args = [ids, z_H, z_L]
    if puzzle_emb:
        pid = torch.tensor([0, 1, 2, 3, 1])
        feeds['puzzle_identifiers'] = pid.numpy()
        args.append(pid)
    seg = E._Segment(model)
    for _ in range(3):                                     # three segments, carry fed back
        with torch.no_grad():
            want = [t.numpy() for t in seg(*args)]
        got = sess.run(None, feeds)
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-4)
        feeds['z_H'], feeds['z_L'] = got[0], got[1]
        args[1], args[2] = torch.from_numpy(got[0]), torch.from_numpy(got[1])


def test_engine_cache_key_changes_with_gpu_version_and_model(tmp_path):
    a, b = os.path.join(tmp_path, 'a.onnx'), os.path.join(tmp_path, 'b.onnx')
    open(a, 'wb').write(b'model a')
    open(b, 'wb').write(b'model b')
    k = E.engine_cache_key(a, 'NVIDIA H100 80GB HBM3', '10.3.0', True)
    assert k != E.engine_cache_key(b, 'NVIDIA H100 80GB HBM3', '10.3.0', True)
    assert k != E.engine_cache_key(a, 'Orin (nvgpu)', '10.3.0', True)
    assert k != E.engine_cache_key(a, 'NVIDIA H100 80GB HBM3', '8.6.2', True)
    assert k == E.engine_cache_key(a, 'NVIDIA H100 80GB HBM3', '10.3.0', True)
    assert '/' not in k and ' ' not in k


def test_build_engine_without_tensorrt_is_a_clear_error(tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip('TensorRT is installed here')
    except ImportError:
        pass
    model = HRM(HRMConfig.tiny(seq_len=4, vocab_size=6, hidden_size=32)).eval()
    path = E.export_onnx(model, os.path.join(tmp_path, 'seg.onnx'))
    with pytest.raises(E.TensorRTUnavailable, match='TensorRT is not installed.*Jetson'):
        E.build_engine(path, os.path.join(tmp_path, 'engines'))
    assert not os.path.exists(os.path.join(tmp_path, 'engines'))
