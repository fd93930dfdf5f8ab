"""RViz markers: per-sensor trust, salience and coherence as bars beside the robot.

Subscribes to sage/coherence (per-modality trust reported and used, the
coherence score) and sage/salience; publishes a visualization_msgs/MarkerArray
on sage/markers in ``frame_id`` (default base_link): one bar per modality whose
height is the trust the model used (colour from red at 0 to green at 1, a thin
grey bar behind it for the trust the sensor reported), a purple bar for
salience and a text line with the coherence score, ACT steps and latency.
Open config/sage.rviz to see them with the camera image.
"""

from __future__ import annotations

from geometry_msgs.msg import Point
from rclpy.node import Node
from sage_core.ros_common import Diagnostics, Param, declare_parameters, run_node, stamp
from sage_msgs.msg import Coherence, Salience
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

PARAMS = [
    Param('frame_id', 'base_link', 'frame the bars stand in'),
    Param('bar_height_m', 0.5, 'height of a bar at value 1', low=0.01, high=10.0),
    Param('spacing_m', 0.15, 'distance between bars', low=0.01, high=10.0),
]


def trust_colour(value: float) -> ColorRGBA:
    """Red at 0 through yellow to green at 1."""
    v = min(1.0, max(0.0, float(value)))
    return ColorRGBA(r=min(1.0, 2 * (1 - v)), g=min(1.0, 2 * v), b=0.1, a=0.9)


class MarkersNode(Node):
    """See the module doc."""

    def __init__(self, **kwargs):
        super().__init__(kwargs.pop('node_name', 'markers'), **kwargs)
        self.p = declare_parameters(self, PARAMS)
        self.diag = Diagnostics(self)
        self.salience = 0.0
        self.pub = self.create_publisher(MarkerArray, 'sage/markers', 10)
        self.create_subscription(Coherence, 'sage/coherence', self._on_coherence, 10)
        self.create_subscription(Salience, 'sage/salience', self._on_salience, 10)
        self.diag.set('OK', 'waiting for sage/coherence')

    def _on_salience(self, msg: Salience) -> None:
        self.salience = float(msg.total)

    def _bar(self, mid: int, ns: str, x: float, value: float, colour: ColorRGBA,
             width: float, header) -> Marker:
        h = max(1e-3, min(1.0, max(0.0, value)) * self.p['bar_height_m'])
        m = Marker(header=header, ns=ns, id=mid, type=Marker.CUBE, action=Marker.ADD,
                   color=colour)
        m.pose.position = Point(x=0.0, y=x, z=h / 2)
        m.pose.orientation.w = 1.0
        m.scale.x = m.scale.y = width
        m.scale.z = h
        return m

    def _on_coherence(self, msg: Coherence) -> None:
        header = msg.header
        header.frame_id = self.p['frame_id']
        header.stamp = stamp(self)
        out, step = [], self.p['spacing_m']
        names = list(msg.modalities)
        for i, name in enumerate(names):
            y = (i - len(names) / 2) * step
            used = msg.trust_used[i] if i < len(msg.trust_used) else 0.0
            told = msg.trust_in[i] if i < len(msg.trust_in) else 0.0
            out.append(self._bar(i, 'trust_used', y, used, trust_colour(used), 0.08, header))
            out.append(self._bar(i, 'trust_reported', y - 0.05, told,
                                 ColorRGBA(r=0.6, g=0.6, b=0.6, a=0.5), 0.02, header))
            label = Marker(header=header, ns='labels', id=i, type=Marker.TEXT_VIEW_FACING,
                           action=Marker.ADD, text=f'{name} {used:.2f}',
                           color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0))
            label.pose.position = Point(x=0.0, y=y, z=self.p['bar_height_m'] + 0.08)
            label.pose.orientation.w = 1.0
            label.scale.z = 0.05
            out.append(label)
        y = (len(names) / 2 + 0.5) * step
        out.append(self._bar(0, 'salience', y, self.salience,
                             ColorRGBA(r=0.6, g=0.2, b=0.9, a=0.9), 0.08, header))
        text = Marker(header=header, ns='coherence', id=0, type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0),
                      text=f'coherence {msg.score:.2f}  ACT {msg.act_steps}  '
                           f'{msg.latency_ms:.1f} ms  salience {self.salience:.2f}')
        text.pose.position = Point(x=0.0, y=0.0, z=self.p['bar_height_m'] + 0.2)
        text.pose.orientation.w = 1.0
        text.scale.z = 0.06
        out.append(text)
        self.pub.publish(MarkerArray(markers=out))
        self.diag.set('OK', f'{len(out)} markers', modalities=len(names))


def main(args=None):
    """Run the markers node."""
    raise SystemExit(run_node(MarkersNode, args))
