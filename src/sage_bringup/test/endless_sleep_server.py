"""A real Sleep action server that accepts goals and never finishes them.

Run as a process by test_bringup_cli: killing it with -9 mid-goal is a sleep node dying
mid-consolidation, as far as `sage sleep` can tell.
"""
import time
import rclpy
from rclpy.action import ActionServer, GoalResponse
from rclpy.executors import MultiThreadedExecutor
from sage_msgs.action import Sleep

rclpy.init()
node = rclpy.create_node('slow_sleep')


def execute(handle):
    while rclpy.ok():
        fb = Sleep.Feedback(progress=0.099, phase='train', message='forever')
        handle.publish_feedback(fb)
        time.sleep(0.2)
    return Sleep.Result()


ActionServer(node, Sleep, 'sage/sleep', execute, goal_callback=lambda g: GoalResponse.ACCEPT)
print('ready', flush=True)
ex = MultiThreadedExecutor()
ex.add_node(node)
ex.spin()
