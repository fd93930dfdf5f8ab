"""RViz markers: per-sensor trust, salience and coherence as bars, and the world.

Subscribes to sage/coherence (per-modality trust reported and used, the
coherence score) and sage/salience; publishes a visualization_msgs/MarkerArray
on sage/markers: one bar per modality whose height is the trust the model used
(colour from red at 0 to green at 1, a thin grey bar behind it for the trust
the sensor reported), a purple bar for salience and a text line with the
coherence score, ACT steps and latency.

With the built-in world (sage/world/robot_pose, sage/world/layout) it also
draws the arena, the beacons and pillars, a ring around the target and the
robot as an arrow, in the world's frame; the bars then stand above the robot
in that frame, so RViz needs no TF. Without a pose the bars stand at the origin
of ``frame_id`` (base_link: they ride on a real robot through its TF).
Open config/sage.rviz to see them with the camera image.
"""

from __future__ import annotations


from geometry_msgs.msg import Point, PoseStamped
from sage_common.validate import world_layout
from sage_ros.guard import GuardedNode
from sage_ros.common import (Diagnostics, Param, declare_parameters, qos_from_name,
                             run_node, stamp)
from sage_msgs.msg import Coherence, Salience
from std_msgs.msg import ColorRGBA, String
from visualization_msgs.msg import Marker, MarkerArray

PARAMS = [
    Param('frame_id', 'base_link', 'frame the bars stand in when no world pose is known'),
    Param('bar_height_m', 0.5, 'height of a bar at value 1', low=0.01, high=10.0),
    Param('spacing_m', 0.15, 'distance between bars', low=0.01, high=10.0),
    Param('bars_above_m', 0.6, 'with a world pose: height of the bars above the robot',
          low=0.0, high=10.0),
]
WHITE = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)


def trust_colour(value: float) -> ColorRGBA:
    """Red at 0 through yellow to green at 1."""
    v = min(1.0, max(0.0, float(value)))
    return ColorRGBA(r=min(1.0, 2 * (1 - v)), g=min(1.0, 2 * v), b=0.1, a=0.9)


def _marker(header, ns: str, mid: int, kind: int, colour: ColorRGBA, x=0.0, y=0.0,
            z=0.0) -> Marker:
    m = Marker(header=header, ns=ns, id=mid, type=kind, action=Marker.ADD, color=colour)
    m.pose.position = Point(x=float(x), y=float(y), z=float(z))
    m.pose.orientation.w = 1.0
    return m


def world_markers(layout: dict, pose: PoseStamped | None, header) -> list[Marker]:
    """Markers for the arena, its objects, the target ring and the robot (ROS-free inputs)."""
    out = []
    half = float(layout.get('arena_m', 6.0)) / 2
    wall = _marker(header, 'arena', 0, Marker.LINE_STRIP,
                   ColorRGBA(r=0.8, g=0.8, b=0.8, a=1.0))
    wall.scale.x = 0.04
    wall.points = [Point(x=x * half, y=y * half) for x, y in
                   ((-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1))]
    out.append(wall)
    for i, obj in enumerate(layout.get('objects', [])):
        r, g, b = (c / 255.0 for c in obj['rgb'])
        cyl = _marker(header, 'objects', i, Marker.CYLINDER, ColorRGBA(r=r, g=g, b=b, a=1.0),
                      obj['x'], obj['y'], 0.25)
        cyl.scale.x = cyl.scale.y = 2 * obj['radius']
        cyl.scale.z = 0.5
        out.append(cyl)
        if obj['name'] == layout.get('target'):
            ring = _marker(header, 'target', 0, Marker.CYLINDER,
                           ColorRGBA(r=1.0, g=1.0, b=1.0, a=0.35), obj['x'], obj['y'], 0.01)
            ring.scale.x = ring.scale.y = 2 * obj['radius'] + 0.5
            ring.scale.z = 0.02
            label = _marker(header, 'target', 1, Marker.TEXT_VIEW_FACING, WHITE,
                            obj['x'], obj['y'], 0.7)
            label.text, label.scale.z = f'target: {obj["name"]}', 0.2
            out += [ring, label]
    if pose is not None:
        arrow = _marker(header, 'robot', 0, Marker.ARROW, ColorRGBA(r=0.1, g=0.6, b=1.0, a=1.0))
        arrow.pose = pose.pose
        arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.45, 0.08, 0.08   # length, shaft, head
        body = _marker(header, 'robot', 1, Marker.CYLINDER,
                       ColorRGBA(r=0.1, g=0.6, b=1.0, a=0.5), pose.pose.position.x,
                       pose.pose.position.y, 0.05)
        body.scale.x = body.scale.y = 2 * float(layout.get('robot_radius', 0.2))
        body.scale.z = 0.1
        out += [arrow, body]
    return out


class MarkersNode(GuardedNode):
    """See the module doc."""

    def __init__(self, **kwargs):
        super().__init__(kwargs.pop('node_name', 'markers'), **kwargs)
        self.p = declare_parameters(self, PARAMS)
        self.diag = Diagnostics(self)
        self.salience = 0.0
        self.pose: PoseStamped | None = None
        self.layout: dict = {}
        self.pub = self.create_publisher(MarkerArray, 'sage/markers', 10)
        self.create_subscription(Coherence, 'sage/coherence', self._on_coherence, 10)
        self.create_subscription(Salience, 'sage/salience', self._on_salience, 10)
        self.create_subscription(PoseStamped, 'sage/world/robot_pose', self._on_pose, 10)
        self.create_subscription(String, 'sage/world/layout', self._on_layout,
                                 qos_from_name('LATCHED'))
        self.diag.set('OK', 'waiting for sage/coherence')

    def _on_salience(self, msg: Salience) -> None:
        self.salience = float(msg.total)

    def _on_layout(self, msg: String) -> None:
        try:
            layout = world_layout(msg.data)
        except ValueError as exc:
            self.diag.set('WARN', f'ignored a bad sage/world/layout: {exc}')
            return
        self.layout = layout

    def _on_pose(self, msg: PoseStamped) -> None:
        self.pose = msg
        header = msg.header
        header.stamp = stamp(self)
        # re-sent with every pose, so an RViz that joins late sees the whole world
        self.pub.publish(MarkerArray(markers=world_markers(self.layout, msg, header)))

    def _bar(self, mid: int, ns: str, x: float, y: float, z0: float, value: float,
             colour: ColorRGBA, width: float, header) -> Marker:
        h = max(1e-3, min(1.0, max(0.0, value)) * self.p['bar_height_m'])
        m = _marker(header, ns, mid, Marker.CUBE, colour, x, y, z0 + h / 2)
        m.scale.x = m.scale.y = width
        m.scale.z = h
        return m

    def _on_coherence(self, msg: Coherence) -> None:
        header = msg.header
        if self.pose is not None:        # above the robot, in the world's frame
            header.frame_id = self.pose.header.frame_id
            x0, y0 = self.pose.pose.position.x, self.pose.pose.position.y
            z0 = self.p['bars_above_m']
        else:
            header.frame_id, x0, y0, z0 = self.p['frame_id'], 0.0, 0.0, 0.0
        header.stamp = stamp(self)
        out, step, top = [], self.p['spacing_m'], z0 + self.p['bar_height_m']
        names = list(msg.modalities)
        for i, name in enumerate(names):
            y = y0 + (i - len(names) / 2) * step
            used = msg.trust_used[i] if i < len(msg.trust_used) else 0.0
            told = msg.trust_in[i] if i < len(msg.trust_in) else 0.0
            out.append(self._bar(i, 'trust_used', x0, y, z0, used, trust_colour(used), 0.08,
                                 header))
            out.append(self._bar(i, 'trust_reported', x0, y - 0.05, z0, told,
                                 ColorRGBA(r=0.6, g=0.6, b=0.6, a=0.5), 0.02, header))
            label = _marker(header, 'labels', i, Marker.TEXT_VIEW_FACING, WHITE, x0, y,
                            top + 0.08)
            label.text, label.scale.z = f'{name} {used:.2f}', 0.05
            out.append(label)
        y = y0 + (len(names) / 2 + 0.5) * step
        out.append(self._bar(0, 'salience', x0, y, z0, self.salience,
                             ColorRGBA(r=0.6, g=0.2, b=0.9, a=0.9), 0.08, header))
        text = _marker(header, 'coherence', 0, Marker.TEXT_VIEW_FACING, WHITE, x0, y0, top + 0.2)
        text.text = (f'coherence {msg.score:.2f}  ACT {msg.act_steps}  '
                     f'{msg.latency_ms:.1f} ms  salience {self.salience:.2f}')
        text.scale.z = 0.06
        out.append(text)
        self.pub.publish(MarkerArray(markers=out))
        self.diag.set('OK', f'{len(out)} markers', modalities=len(names),
                      world=bool(self.layout))


def main(args=None):
    """Run the markers node."""
    raise SystemExit(run_node(MarkersNode, args))
