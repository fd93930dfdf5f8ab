"""The ROS side of `sage life`: run the graph through its days and listen to it.

``live`` starts `sage run --processes` and, on a small node of its own, hears each
episode's metrics (sage/episode), each night's last status (sage/sleep/status) and the
robot's actions beside the teacher's labels, for agreement by day.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

WORK_SEED = 1_000           # work seeds; demonstrations use 0 .. demo_episodes - 1


def _night(status) -> dict:
    """Return what one night did, from the sleep node's final SleepStatus."""
    parts = {}
    for part in status.message.split('; '):
        m = re.match(r'(\w+): (.*?)(?: \((\d+) s of (\d+)\))?$', part)
        if m:
            parts[m[1]] = {'committed': m[2].startswith('committed'), 'message': m[2],
                           'elapsed_s': float(m[3] or 0), 'budget_s': float(m[4] or 0)}
    names = list(status.metric_names)      # the last target's scores before and after
    return {'cycle': int(status.cycle), 'phase': status.phase, 'targets': parts,
            'message': status.message,
            'metrics_before': dict(zip(names, map(float, status.metrics_before))),
            'metrics_after': dict(zip(names, map(float, status.metrics_after)))}


def live(args, home: str, path: str) -> tuple[list, list, dict]:
    """Run the graph through the days; return episodes, nights, teacher agreement by day."""
    import rclpy
    from sage_msgs.msg import Action, SleepStatus
    from sage_sim.days import Days
    from std_msgs.msg import String

    per_day = args.morning + args.work
    days = Days(WORK_SEED, per_day, args.morning)
    episodes, nights, agree = [], [], {}
    teacher = {'id': -1, 't': 0.0}
    rclpy.init()
    node = rclpy.create_node('sage_life')
    node.create_subscription(String, 'sage/episode',
                             lambda m: episodes.append(json.loads(m.data)), 100)

    def on_status(msg):
        if msg.trigger == 'night' and msg.phase in ('done', 'rollback', 'idle'):
            nights.append(_night(msg))
    node.create_subscription(SleepStatus, 'sage/sleep/status', on_status, 100)
    node.create_subscription(Action, 'sage/teacher_action',
                             lambda m: teacher.update(id=m.discrete_id, t=time.monotonic()), 100)

    def on_action(msg):
        if time.monotonic() - teacher['t'] < 0.2:     # the teacher's label of this moment
            day = days.episode(len(episodes))[0]
            hits, total = agree.get(day, (0, 0))
            agree[day] = (hits + (msg.discrete_id == teacher['id']), total + 1)
    node.create_subscription(Action, 'sage/action', on_action, 100)
    env = dict(os.environ, SAGE_HOME=home)
    log = open(os.path.join(home, 'graph.log'), 'w')
    graph = subprocess.Popen(['sage', 'run', '--processes', '--no-status-line',
                              '--params-file', path], env=env, stdout=log, stderr=log)
    total = args.days * per_day
    try:
        while len(episodes) < total:
            rclpy.spin_once(node, timeout_sec=0.5)
            if graph.poll() is not None:
                raise RuntimeError(f'sage run exited {graph.returncode}: see {log.name}')
            day, phase, _ = days.episode(min(len(episodes), total - 1))
            wins = [e['success'] for e in episodes if e.get('day') == day and
                    e.get('phase') == 'morning']
            print(f'\rday {day + 1}/{args.days}  episode {len(episodes) % per_day + 1}/'
                  f'{per_day} ({phase})  morning {sum(wins)}/{len(wins)}  nights {len(nights)}'
                  '   ', end='', flush=True)
    finally:
        print()
        graph.terminate()
        graph.wait(60)
        node.destroy_node()
        rclpy.try_shutdown()
    return episodes, nights, {d: h / max(1, n) for d, (h, n) in agree.items()}
