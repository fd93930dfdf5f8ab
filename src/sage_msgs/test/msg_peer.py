"""Peer process for the interface test: publishes every sage_msgs message and
serves every sage_msgs service and action with values derived from the request."""

import sys
import time

import rclpy
from rclpy.action import ActionServer
from rclpy.executors import MultiThreadedExecutor

sys.path.insert(0, __import__('os').path.dirname(__file__))
from msg_fill import fill, message_class  # noqa: E402

MESSAGES = sys.argv[1].split(',')


def main():
    rclpy.init()
    node = rclpy.create_node('sage_msgs_peer')
    pubs = [(node.create_publisher(message_class(f'sage_msgs/{m}'), f'peer/{m}', 10), m)
            for m in MESSAGES]
    from sage_msgs.action import Sleep, Think
    from sage_msgs.srv import Recall, Snapshot

    def recall(req, resp):
        resp.success, resp.recalled = True, [2.0 * x for x in req.query]
        resp.score, resp.message = 0.75, 'ok'
        return resp

    def snapshot(req, resp):
        resp.success, resp.path, resp.message = True, req.path + '/saved', 'saved'
        return resp

    def sleep_cb(handle):
        fb = Sleep.Feedback(phase='train', progress=0.5, message='half')
        handle.publish_feedback(fb)
        handle.succeed()
        return Sleep.Result(committed=True, checkpoint='v1',
                            message=','.join(handle.request.targets))

    def think_cb(handle):
        handle.publish_feedback(Think.Feedback(partial_text='th', tokens=1))
        handle.succeed()
        return Think.Result(text=handle.request.instruction.upper(), trust=0.5, latency_s=0.1)

    node.create_service(Recall, 'peer/recall', recall)
    node.create_service(Snapshot, 'peer/snapshot', snapshot)
    ActionServer(node, Sleep, 'peer/sleep', sleep_cb)
    ActionServer(node, Think, 'peer/think', think_cb)

    def publish():
        for pub, name in pubs:
            pub.publish(fill(message_class(f'sage_msgs/{name}')(), seed=len(name)))

    node.create_timer(0.1, publish)
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    end = time.monotonic() + float(sys.argv[2])
    while rclpy.ok() and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.1)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == '__main__':
    main()
