"""Shared helpers for benchmarks: print a table, write bench/results/NAME.json.

Imported first by every benchmark: it keeps ROS on this machine and on a run-unique
domain (never the user's own), and puts the test support (real data) on the path.
"""

import json
import os
import platform
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, 'bench', 'results')
sys.path.insert(0, os.path.join(ROOT, 'tests'))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE',
                      os.path.join(ROOT, 'config', 'fastdds.xml'))   # dead nodes leave in 3 s
os.environ['ROS_DOMAIN_ID'] = os.environ.get('SAGE_BENCH_DOMAIN_ID') or str(random.choice(
    [d for d in range(1, 101) if str(d) != os.environ.get('ROS_DOMAIN_ID', '0')]))


def write(name: str, summary: dict, rows: list[tuple], detail: dict | None = None) -> str:
    """Print rows as a table and save {summary, rows, detail, machine} as JSON."""
    width = max(len(str(r[0])) for r in rows) if rows else 10
    print(f'\n{name}')
    for row in rows:
        print(f'  {str(row[0]):{width}s}  ' + '  '.join(str(x) for x in row[1:]))
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f'{name}.json')
    with open(path, 'w') as f:
        json.dump({'summary': summary, 'rows': [list(map(str, r)) for r in rows],
                   'detail': detail or {}, 'machine': {
                       'cpu': platform.processor() or platform.machine(),
                       'cores': os.cpu_count(), 'python': platform.python_version(),
                       'date': time.strftime('%Y-%m-%d')}}, f, indent=1, default=float)
    print(f'wrote {path}')
    return path
