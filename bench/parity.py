"""Parity of the graph and the offline pipeline on a real bag.

    python bench/parity.py

Feeds the real bag (camera, microphone, IMU, instruction) to the sensor and cognition
nodes and compares their Features with the offline pipeline's (training, sleep
validation, benchmarks): max_feature_diff, max_trust_diff, modalities_checked.
"""

import tempfile

import common  # noqa: F401  (first: ROS on localhost, a run-unique domain, test support)
from sage_testing.parity import measure


def main():
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(tmp)
    rows = [('modality', 'offline', 'graph', 'max |feature diff|', 'max |trust diff|',
             'min trust')]
    for m, d in result['detail'].items():
        rows.append((m, d['offline'], d['graph'], f'{d["max_feature_diff"]:.2e}',
                     f'{d["max_trust_diff"]:.2e}', f'{d["min_trust"]:.3f}'))
    common.write('parity', result['summary'], rows, result['detail'])


if __name__ == '__main__':
    main()
