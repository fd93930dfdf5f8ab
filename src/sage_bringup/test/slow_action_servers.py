"""Real Sleep and Think action servers that work on each goal for ``argv[1]`` seconds.

Forever when the argument is absent; ``abort`` aborts every goal at once. Run as a
process by test_bringup_cli: killing it with -9 mid-goal is a sleep node dying
mid-consolidation, or a cognition node dying mid-thought, as far as `sage sleep` and
`sage think` can tell.
"""
import sys
import time

import rclpy
from rclpy.action import ActionServer, GoalResponse
from rclpy.executors import MultiThreadedExecutor
from sage_msgs.action import Sleep, Think

rclpy.init()
node = rclpy.create_node('slow_servers')
ABORT = sys.argv[1:] == ['abort']
seconds = 0.0 if ABORT else float(sys.argv[1]) if len(sys.argv) > 1 else float('inf')


def work(handle, feedback):
    print('working', flush=True)        # the test kills us once a goal is under way
    end = time.monotonic() + seconds
    while rclpy.ok() and time.monotonic() < end:
        handle.publish_feedback(feedback)
        time.sleep(0.2)
    handle.abort() if ABORT else handle.succeed()


def sleep(handle):
    work(handle, Sleep.Feedback(progress=0.099, phase='train', message='working'))
    return Sleep.Result(message='slept well', metric_names=['loss'], metrics_before=[1.0],
                        metrics_after=[0.5])


def think(handle):
    work(handle, Think.Feedback(partial_text='go to', tokens=2))
    return Think.Result(text='go to the red beacon', trust=0.9, latency_s=float(seconds))


ActionServer(node, Sleep, 'sage/sleep', sleep, goal_callback=lambda g: GoalResponse.ACCEPT)
ActionServer(node, Think, 'sage/cognition/test/think', think,
             goal_callback=lambda g: GoalResponse.ACCEPT)
print('ready', flush=True)
executor = MultiThreadedExecutor()
executor.add_node(node)
executor.spin()
