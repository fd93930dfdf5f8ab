"""Sleep trains the camera's frame encoder on the frames the day stored."""

import os

import pytest
import torch
from sage_common.checkpoints import CheckpointStore
from sage_coherence.model import CoherenceModel
from sage_memory.store import ExperienceStore
from sage_sensors.encoder import EncoderFile
from sage_sim.evaluate import MORNING
from sage_sim.world import WorldConfig
from sage_sleep.consolidate import run_target
from sage_sleep.learn import default_config, record_day
from sage_sleep.targets import encoder_base, EncoderTarget, regression_frames


@pytest.mark.slow
def test_encoder_sleeps_on_stored_frames_and_the_camera_reloads_it(tmp_path):
    cfg = default_config()
    store = ExperienceStore(str(tmp_path / 'exp.db'), cfg.modalities)
    torch.manual_seed(0)              # the (untrained) model that drives decides the frames
    record_day(CoherenceModel(cfg), range(400, 408), store,
               world_config=WorldConfig(time_limit_s=8.0), frame_every=5)
    assert store.frame_count() >= 100
    ckpts = CheckpointStore(str(tmp_path / 'models'), 'vision_encoder')
    encoder_base(ckpts)
    encoder_base(ckpts)                                # the base is committed once
    assert ckpts.versions() == [1]
    # what the camera node watches with `encoder: models/vision_encoder/latest/weights.pt`
    watched = EncoderFile(os.path.join(ckpts.dir, 'latest', 'weights.pt'))
    assert watched.encoder is not None and watched.encoder.ref_error is None
    target = EncoderTarget(store, regression=regression_frames(MORNING.seeds[:3], views=4))
    result = run_target(target, ckpts, {'train_s': 30.0}, lambda *a: None, lambda: False)
    assert result.committed, result.message
    # this seeded day: 0.0324 -> 0.0175 (0.54x); 0.7 leaves room for a loaded machine's
    # fewer epochs within train_s, and is still far outside run-to-run noise
    assert result.after['heldout_error'] < 0.7 * result.before['heldout_error']
    assert result.after['regression_error'] <= result.before['regression_error']
    assert ckpts.versions() == [1, 2]
    assert watched.poll() and watched.encoder.ref_error is not None   # hot-reloaded
    # a second night on the same frames must beat the new version, not the base
    again = run_target(EncoderTarget(store, lr=0.0, regression=target.regression), ckpts,
                       {'train_s': 5.0}, lambda *a: None, lambda: False)
    assert not again.committed and 'rolled back' in again.message
    assert ckpts.latest_version() == 2
