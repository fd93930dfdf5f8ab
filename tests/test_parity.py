"""What SAGE trains on is what the robot runs: the nodes' features and trust equal the
offline pipeline's on a real bag (sage_testing.parity; bench/parity.py reports it)."""

import pytest
from sage_testing.parity import measure


@pytest.mark.timeout(300)
def test_graph_and_offline_pipeline_agree_on_a_real_bag(tmp_path):
    result = measure(str(tmp_path))
    detail = result['detail']
    for m, d in detail.items():
        assert d['graph'] == d['offline'] > 0, f'{m}: {d}'
    assert result['summary']['modalities_checked'] == 4
    assert result['summary']['max_feature_diff'] < 1e-5, detail
    assert result['summary']['max_trust_diff'] < 1e-6, detail
    # the trust factors are exercised, not all 1: the walking leg saturates a ±250 deg/s gyro
    assert detail['imu']['min_trust'] < 0.9
