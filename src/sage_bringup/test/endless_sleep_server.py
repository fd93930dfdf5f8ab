"""A real Sleep action server that works on each goal for ``argv[1]`` seconds.

Forever when the argument is absent. Run as a process by test_bringup_cli: killing it
with -9 mid-goal is a sleep node dying mid-consolidation, as far as `sage sleep` can tell.
"""
import sys
import time

import rclpy
from rclpy.action import ActionServer, GoalResponse
from rclpy.executors import MultiThreadedExecutor
from sage_msgs.action import Sleep

rclpy.init()
node = rclpy.create_node('slow_sleep')
seconds = float(sys.argv[1]) if len(sys.argv) > 1 else float('inf')


def execute(handle):
    end = time.monotonic() + seconds
    while rclpy.ok() and time.monotonic() < end:
        handle.publish_feedback(Sleep.Feedback(progress=0.099, phase='train',
                                               message='working'))
        time.sleep(0.2)
    handle.succeed()
    return Sleep.Result(message='slept well', metric_names=['loss'], metrics_before=[1.0],
                        metrics_after=[0.5])


ActionServer(node, Sleep, 'sage/sleep', execute, goal_callback=lambda g: GoalResponse.ACCEPT)
print('ready', flush=True)
executor = MultiThreadedExecutor()
executor.add_node(node)
executor.spin()
