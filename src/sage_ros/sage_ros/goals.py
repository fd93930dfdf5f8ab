"""Action clients that notice a dead server: the one way SAGE's tools wait on a goal.

A goal whose server dies never ends by itself (rclpy keeps waiting for a result that
will never come), so every client (`sage sleep`, `sage think`) waits through
``run_goal``: it spins until the result arrives, and raises ``ServerLost`` when the
server that accepted the goal has been gone for ``lost_after_s`` (its process died,
or it restarted: a respawned server has new endpoints and does not know the goal).
Ctrl-C cancels the goal before it leaves.
"""

from __future__ import annotations

import time

import rclpy


class ServerLost(RuntimeError):
    """The server a client waits on has gone (its process died or restarted)."""


class GoalRejected(RuntimeError):
    """The server refused the goal, or ended it without success (aborted, canceled)."""


def endpoints(node, action: str) -> set:
    """Endpoint ids of the processes serving ``action`` now (its status publishers)."""
    return {bytes(i.endpoint_gid) for i in
            node.get_publishers_info_by_topic(f'{action}/_action/status')}


def wait_served(node, future, server_alive, name: str, lost_after_s: float = 2.0) -> None:
    """Spin ``node`` until ``future`` is done; ServerLost when the server is gone too long."""
    last_seen = time.monotonic()
    while not future.done():
        rclpy.spin_once(node, timeout_sec=0.2)
        if server_alive():
            last_seen = time.monotonic()
        elif time.monotonic() - last_seen > lost_after_s:
            raise ServerLost(f'{name} went away (its node died or restarted) before '
                             f'answering; check `sage status` and the node\'s log')


def run_goal(node, client, goal, name: str, on_feedback=None, lost_after_s: float = 2.0):
    """Send ``goal`` through ``client`` (ready: see wait_for_server) and return its result.

    Raises GoalRejected (refused, aborted or canceled), ServerLost, or KeyboardInterrupt
    after cancelling the goal.
    """
    from action_msgs.msg import GoalStatus
    send = client.send_goal_async(
        goal, feedback_callback=(lambda m: on_feedback(m.feedback)) if on_feedback else None)
    try:
        wait_served(node, send, client.server_is_ready, name, lost_after_s)
        handle = send.result()
        if not handle.accepted:
            raise GoalRejected(f'{name} rejected the goal (see its log)')
        result = handle.get_result_async()
        server = endpoints(node, name)        # the server that took the goal
        wait_served(node, result, lambda: bool(server & endpoints(node, name)), name,
                    lost_after_s)
    except KeyboardInterrupt:
        if send.done() and send.result().accepted:
            cancel = send.result().cancel_goal_async()
            rclpy.spin_until_future_complete(node, cancel, timeout_sec=5.0)
        raise
    done = result.result()
    if done.status != GoalStatus.STATUS_SUCCEEDED:
        ended = {GoalStatus.STATUS_ABORTED: 'aborted', GoalStatus.STATUS_CANCELED: 'canceled'}
        raise GoalRejected(f'{name} {ended.get(done.status, "failed")} the goal (see its '
                           f'log)')
    return done.result
