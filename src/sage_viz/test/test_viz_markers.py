"""RViz markers in a real rclpy graph: bars follow trust and salience."""

import pytest
from rclpy.parameter import Parameter
from sage_viz.markers_node import MarkersNode
from sage_testing.graph import Graph
from sage_msgs.msg import Coherence, Salience
from visualization_msgs.msg import Marker, MarkerArray


def test_bars_follow_trust_and_salience():
    with Graph() as g:
        g.add(MarkersNode(context=g.context, parameter_overrides=[
            Parameter('frame_id', value='robot_base'), Parameter('bar_height_m', value=1.0)]))
        arrays = g.collect(MarkerArray, 'sage/markers')
        salience = g.publisher(Salience, 'sage/salience')
        coherence = g.publisher(Coherence, 'sage/coherence')

        def publish():
            salience.publish(Salience(total=0.7))
            coherence.publish(Coherence(score=0.8, modalities=['vision', 'imu'],
                                        trust_in=[0.9, 0.2], trust_used=[0.25, 1.0],
                                        act_steps=2, latency_ms=3.0))
            return arrays and any(m.ns == 'salience' and m.scale.z > 0.6
                                  for m in arrays[-1].markers)
        assert g.wait_for(publish, 10), 'no markers'
        markers = {(m.ns, m.id): m for m in arrays[-1].markers}
        assert all(m.header.frame_id == 'robot_base' for m in markers.values())
        vision, imu = markers[('trust_used', 0)], markers[('trust_used', 1)]
        assert vision.type == Marker.CUBE and abs(vision.scale.z - 0.25) < 1e-6
        assert abs(imu.scale.z - 1.0) < 1e-6 and imu.color.g > imu.color.r     # trusted: green
        assert vision.color.r > vision.color.g                                 # distrusted: red
        assert abs(markers[('trust_reported', 1)].scale.z - 0.2) < 1e-6
        assert abs(markers[('salience', 0)].scale.z - 0.7) < 1e-6
        assert markers[('labels', 0)].text == 'vision 0.25'
        assert 'coherence 0.80' in markers[('coherence', 0)].text


def test_the_world_is_drawn_from_the_world_node_and_bars_ride_on_the_robot():
    import math

    from sage_sim.world import BEACONS
    from sage_sim.world_node import WorldNode
    with Graph() as g:
        world = g.add(WorldNode(context=g.context, parameter_overrides=[
            Parameter('seed', value=3), Parameter('real_time_factor', value=5.0),
            Parameter('time_limit_s', value=3600.0)]))   # one episode for the whole test
        g.add(MarkersNode(context=g.context))
        arrays = g.collect(MarkerArray, 'sage/markers')
        coherence = g.publisher(Coherence, 'sage/coherence')

        def drawn():
            return any(m.ns == 'objects' for a in arrays for m in a.markers)
        assert g.wait_for(drawn, 10), 'no world markers'
        scene = next(a for a in reversed(arrays) if any(m.ns == 'robot' for m in a.markers))
        by_ns = {}
        for m in scene.markers:
            by_ns.setdefault(m.ns, []).append(m)
            assert m.header.frame_id == 'map'
        w = world.world
        assert len(by_ns['objects']) == len(w.objects) == len(BEACONS) + w.cfg.n_pillars
        for m, obj in zip(sorted(by_ns['objects'], key=lambda m: m.id), w.objects):
            assert (m.pose.position.x, m.pose.position.y) == pytest.approx(obj[:2])
            assert m.scale.x == pytest.approx(2 * obj[2])
            assert (m.color.r, m.color.g, m.color.b) == pytest.approx(
                [c / 255 for c in obj[3]])
        target = w.objects[w.target]
        ring = next(m for m in by_ns['target'] if m.type == Marker.CYLINDER)
        assert (ring.pose.position.x, ring.pose.position.y) == pytest.approx(target[:2])
        assert any(m.text == f'target: {w.target_name}' for m in by_ns['target'])
        arrow = next(m for m in by_ns['robot'] if m.type == Marker.ARROW)
        assert (arrow.pose.position.x, arrow.pose.position.y) == pytest.approx((w.x, w.y))
        q = arrow.pose.orientation
        assert 2 * math.atan2(q.z, q.w) == pytest.approx(w.yaw, abs=1e-6)   # REP-103 yaw

        def bars():
            coherence.publish(Coherence(score=0.5, modalities=['vision'], trust_in=[1.0],
                                        trust_used=[1.0]))
            return any(m.ns == 'trust_used' for a in arrays for m in a.markers)
        # the world's pose arrays (150 Hz here) interleave with the bars: search them all
        assert g.wait_for(bars, 10)
        bar = next(m for a in reversed(arrays) for m in a.markers if m.ns == 'trust_used')
        assert bar.header.frame_id == 'map'
        assert bar.pose.position.x == pytest.approx(w.x)
        assert bar.pose.position.z > 0.6                     # above the robot
