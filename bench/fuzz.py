"""Fuzz the default graph: every subscribed topic, adversarial messages of its type.

    python bench/fuzz.py [--messages N] [--seed S]

Runs `sage run --processes --source bag` and publishes N hypothesis-generated messages
across all subscribed topics (sage_testing.fuzz), then writes bench/results/fuzz.json:
topics_fuzzed, messages, node_exits, cmd_vel_violations, nonfinite_stored.
"""

import argparse
import tempfile

import common  # noqa: F401  (first: ROS on localhost, a run-unique domain, test support)
from sage_testing.fuzz import run_fuzz


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--messages', type=int, default=100_000)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_fuzz(tmp, args.messages, args.seed)
    rows = [('topic', 'type', 'messages')]
    rows += [(t, d['type'], d['messages']) for t, d in result['detail']['per_topic'].items()]
    rows += [('summary', '', ''), *[(k, '', v) for k, v in result['summary'].items()]]
    common.write('fuzz', result['summary'], rows, result['detail'])


if __name__ == '__main__':
    main()
