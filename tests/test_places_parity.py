"""Parity of the places feature: the camera and memory nodes give what SensePipeline gives."""

import numpy as np
from rclpy.parameter import Parameter
from sage_memory.memory_node import MemoryNode
from sage_msgs.msg import Feature
from sage_testing.graph import Graph


def params(tmp_path):
    return {'store_path': str(tmp_path / 'exp.db'), 'sidecar_path': str(tmp_path / 'side.npz'),
            'spatial_path': str(tmp_path / 'spatial.npz'), 'key_dim': 32, 'slots': 16}


def test_places_in_the_graph_equal_the_offline_pipelines(tmp_path):
    """World frames through the camera node's detector and the memory node = SensePipeline."""
    from builtin_interfaces.msg import Time
    from sage_msgs.msg import Detection2DArray
    from sage_ros.common import qos_from_name
    from sage_ros.image_conv import numpy_to_image
    from sage_sensors.sensor_nodes import CameraNode
    from sage_sim.evaluate import scene
    from sage_sim.world import World
    from sage_sim.world_node import odometry_msg
    from sage_sleep.agent import SensePipeline
    from sensor_msgs.msg import CameraInfo, LaserScan
    world, pipeline = World(), SensePipeline()
    obs = world.set_scenario(**scene('recall', 30004))
    sim = [Parameter('use_sim_time', value=True)]
    with Graph() as g:                    # the two nodes are driven by hand, in lockstep
        camera = CameraNode(context=g.context, parameter_overrides=sim)
        memory = MemoryNode(context=g.context, parameter_overrides=sim + [
            Parameter(k, value=v) for k, v in params(tmp_path).items()])
        try:
            f = world.cfg.focal_px
            k = [f, 0.0, 80.0, 0.0, f, 60.0, 0.0, 0.0, 1.0]
            camera._on_info(CameraInfo(width=160, height=120, k=k))
            detections = g.collect(Detection2DArray, 'sage/detections')
            scans = g.collect(LaserScan, 'camera/scan', qos_from_name('SENSOR_DATA'))
            places = g.collect(Feature, 'sage/features/places', qos_from_name('SENSOR_DATA'))
            worst = 0.0
            for step in range(40):
                stamp = Time(sec=int(obs.time_s), nanosec=int(round(obs.time_s % 1 * 1e9)))
                image = numpy_to_image(obs.image, 'rgb8')
                image.header.stamp = stamp
                memory._on_odom(odometry_msg(obs.odom, stamp))
                camera.process(image)
                assert g.wait_for(lambda: len(detections) == len(scans) == step + 1, 10)
                memory._on_detections(detections[-1])
                memory._on_scan(scans[-1])
                assert g.wait_for(lambda: len(places) == step + 1, 10)
                want = pipeline.remember(obs).vector
                worst = max(worst, float(np.abs(np.asarray(places[-1].data) - want).max()))
                obs, _, _, _ = world.step(0.0 if step < 5 else 0.35, 0.9)
            assert worst < 1e-4, worst
            assert len(memory.spatial.landmarks) >= 4
        finally:
            camera.destroy_node()
            memory.destroy_node()
