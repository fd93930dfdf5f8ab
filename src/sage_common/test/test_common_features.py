"""Feature buffering (staleness, rejection) and the command limiter/watchdog."""

import math

import numpy as np
import pytest
from sage_common.features import FeatureBuffer, FeatureRejected


def test_buffer_rejects_bad_features_and_counts_them():
    buf = FeatureBuffer({'vision': 4, 'imu': 2})
    for bad in ([1, 2, 3], [1, 2, 3, math.nan], [1, 2, 3, math.inf]):
        with pytest.raises(FeatureRejected):
            buf.put('vision', bad, 1.0, 0.0)
    with pytest.raises(FeatureRejected, match='unknown modality'):
        buf.put('lidar', [1, 2], 1.0, 0.0)
    assert buf.rejected == 4 and not buf.latest


def test_stale_features_lose_trust_then_vanish():
    buf = FeatureBuffer({'vision': 2, 'imu': 1}, stale_after_s=0.5, drop_after_s=1.5)
    buf.put('vision', [1, 2], 0.8, 10.0)
    assert buf.effective_trust('vision', 10.4) == pytest.approx(0.8)
    assert buf.effective_trust('vision', 11.0) == pytest.approx(0.4)
    vectors, trust, age = buf.snapshot(12.0)
    assert trust[0] == 0 and np.all(vectors['vision'] == 0) and age[0] == 1.5
    assert trust[1] == 0  # imu never seen


def test_older_stamp_does_not_replace_newer():
    buf = FeatureBuffer({'imu': 1})
    buf.put('imu', [2.0], 1.0, 5.0)
    buf.put('imu', [1.0], 1.0, 4.0)
    assert buf.latest['imu'].vector[0] == 2.0


def test_a_feature_stamped_in_the_future_is_refused_and_cannot_freeze_the_buffer():
    buf = FeatureBuffer({'imu': 1})
    with pytest.raises(FeatureRejected, match='in the future'):
        buf.put('imu', [1.0], 1.0, stamp_s=1e9, now_s=10.0)       # a clock 30 years ahead
    buf.put('imu', [2.0], 1.0, stamp_s=10.0, now_s=10.0)
    buf.put('imu', [3.0], 1.0, stamp_s=10.1, now_s=10.1)          # later samples still land
    assert buf.latest['imu'].vector[0] == 3.0
