"""RViz markers in a real rclpy graph: bars follow trust and salience."""

from rclpy.parameter import Parameter
from sage_bringup.markers_node import MarkersNode
from sage_core.testing import Graph
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
