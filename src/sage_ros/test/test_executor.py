"""A coroutine callback waits for a worker thread without keeping the executor busy."""

import concurrent.futures
import threading
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from sage_ros.common import wait_for_thread
from std_msgs.msg import Int32


def test_waiting_for_a_thread_costs_no_core_and_other_callbacks_run():
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('waiter', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    heard = []
    node.create_subscription(Int32, 'ticks', lambda m: heard.append(m.data), 10)
    pub = node.create_publisher(Int32, 'ticks', 10)
    done = concurrent.futures.Future()
    threading.Timer(2.0, done.set_result, args=('finished',)).start()   # the worker

    async def goal():
        return await wait_for_thread(done)
    try:
        task = executor.create_task(goal)
        cpu, start = time.process_time(), time.monotonic()
        while not task.done() and time.monotonic() - start < 10:
            pub.publish(Int32(data=len(heard)))
            executor.spin_once(timeout_sec=0.1)
        waited, used = time.monotonic() - start, time.process_time() - cpu
        assert task.result() == 'finished' and 1.9 < waited < 4.0
        assert used < 0.25 * waited, f'{used:.2f} s of CPU in {waited:.2f} s of waiting'
        assert len(heard) >= 5          # the node's other callbacks ran meanwhile
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
