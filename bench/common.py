"""Shared helpers for benchmarks: print a table, write bench/results/NAME.json."""

import json
import os
import platform
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


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
