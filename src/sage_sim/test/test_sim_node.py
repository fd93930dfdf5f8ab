"""The world node in a real rclpy graph: all topics, sim time, commands move the robot."""

import json
import math

from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sage_testing.graph import Graph
from sage_msgs.msg import Action, AudioChunk
from sage_sim.world_node import WorldNode
from sensor_msgs.msg import CameraInfo, Image, Imu
from std_msgs.msg import Float32, String

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def test_world_node_publishes_everything_in_sim_time():
    with Graph() as g:
        got = {t: g.collect(m, t) for t, m in [
            ('camera/image_raw', Image), ('camera/camera_info', CameraInfo),
            ('imu/data_raw', Imu), ('audio/chunk', AudioChunk), ('sage/reward', Float32),
            ('sage/teacher_action', Action), ('/clock', Clock), ('sage/episode', String)]}
        instruction = g.collect(String, 'sage/instruction', LATCHED)
        node = g.add(WorldNode(context=g.context, parameter_overrides=[
            Parameter('use_sim_time', value=True), Parameter('real_time_factor', value=10.0),
            Parameter('time_limit_s', value=2.0)]))
        assert g.wait_for(lambda: got['sage/episode'], timeout=20), 'no episode ended'
        for topic, msgs in got.items():
            assert msgs, f'nothing on {topic}'
        assert instruction and 'beacon' in instruction[0].data or 'drive' in instruction[0].data
        image = got['camera/image_raw'][-1]
        assert (image.width, image.height, image.encoding) == (160, 120, 'rgb8')
        assert image.header.frame_id.endswith('_optical_frame')
        imu = got['imu/data_raw'][-1]
        assert imu.orientation_covariance[0] == -1.0
        assert 9.0 < imu.linear_acceleration.z < 10.6
        clock = [c.clock.sec + c.clock.nanosec * 1e-9 for c in got['/clock']]
        assert clock == sorted(clock) and clock[-1] >= 1.9
        # stamps come from the world's sim clock, which the node's own clock follows
        assert g.wait_for(lambda: node.get_clock().now().nanoseconds * 1e-9 >= 1.9)
        audio = got['audio/chunk'][0]
        assert audio.encoding == 'S16LE' and len(audio.data) == 2 * 1600
        episode = json.loads(got['sage/episode'][0].data)
        assert episode['success'] is False and episode['time_s'] >= 2.0
        # across the episode boundary (reset frame, then the next episode) stamps never repeat
        n = len(got['camera/image_raw'])
        assert g.wait_for(lambda: len(got['camera/image_raw']) >= n + 3, timeout=10)
        stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
                  for m in got['camera/image_raw']]
        assert all(b > a for a, b in zip(stamps, stamps[1:])), 'a camera stamp repeated'


def test_cmd_vel_moves_the_robot():
    with Graph() as g:
        node = g.add(WorldNode(context=g.context, parameter_overrides=[
            Parameter('real_time_factor', value=10.0)]))
        imu = g.collect(Imu, 'imu/data_raw')
        odom = g.collect(Odometry, 'odom')
        pub = g.publisher(TwistStamped, 'cmd_vel')
        yaw0 = node.world.yaw
        cmd = TwistStamped()
        cmd.twist.angular.z = 1.0

        def turned():
            pub.publish(cmd)
            return abs(node.world.yaw - yaw0) > 0.5
        assert g.wait_for(turned, timeout=10)
        assert any(m.angular_velocity.z > 0.5 for m in imu)
        # wheel odometry (REP-105): the turn, measured in odom, with a growing covariance
        assert g.wait_for(lambda: odom and odom[-1].twist.twist.angular.z > 0.5, timeout=5)
        last = odom[-1]
        assert (last.header.frame_id, last.child_frame_id) == ('odom', 'base_link')
        yaw = 2 * math.atan2(last.pose.pose.orientation.z, last.pose.pose.orientation.w)
        assert abs(yaw) > 0.3
        cov = list(last.pose.covariance)
        assert cov[35] > odom[0].pose.covariance[35] >= 0 and cov[14] == 1e6
        assert all(math.isfinite(c) for c in cov)


def test_the_operator_teacher_labels_a_search_where_the_oracle_would_not():
    with Graph() as g:
        labels = g.collect(Action, 'sage/teacher_action')
        node = g.add(WorldNode(context=g.context, parameter_overrides=[
            Parameter('seed', value=10000), Parameter('teacher', value='operator'),
            Parameter('real_time_factor', value=10.0)]))
        assert not node.world.target_seen           # seed 10000 starts facing away from it
        assert g.wait_for(lambda: len(labels) >= 5, 10)
        assert {m.source for m in labels} == {'operator'}
        assert labels[0].discrete_name == 'turn_left'          # searching: the robot stands


def test_without_a_sleep_node_a_day_ends_in_the_next_morning_not_a_night():
    """Days in a graph with nobody to sleep: the world skips the night, never waits it out."""
    import datetime as dt
    with Graph() as g:
        episodes = g.collect(String, 'sage/episode', 10)
        clock = g.collect(Clock, '/clock', 1000)
        g.add(WorldNode(context=g.context, parameter_overrides=[
            Parameter('real_time_factor', value=20.0), Parameter('time_limit_s', value=1.0),
            Parameter('day_episodes', value=2), Parameter('morning_episodes', value=1),
            Parameter('episodes', value=3), Parameter('night_timeout_s', value=600.0)]))
        assert g.wait_for(lambda: len(episodes) >= 3, 30), len(episodes)
    ended = [json.loads(m.data) for m in episodes]
    assert [(e['day'], e['phase']) for e in ended] == [(0, 'morning'), (0, 'work'),
                                                       (1, 'morning')]
    # the morning suite is the measure: marked so that no night trains on it
    assert [e.get('held_out', False) for e in ended] == [True, False, True]
    hours = {dt.datetime.fromtimestamp(c.clock.sec).replace(minute=0, second=0)
             for c in clock}
    assert dt.datetime(2000, 1, 2, 7) in hours           # the next morning came at once
