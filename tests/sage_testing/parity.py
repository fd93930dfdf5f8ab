"""Parity: the graph's features equal the offline pipeline's on the same real bag.

The real bag (sage_testing.realbag) is read back message by message and handed to the
camera, microphone and IMU nodes (real rclpy nodes in a real graph, default
parameters); the instruction goes to a cognition node on its topic. Their published
Features are compared with what ``sage_sleep.agent.SensePipeline`` (the pipeline of
training, sleep validation, benchmarks and ``sage train``) computes from the original
arrays. The nodes run on sim time with no /clock, so every observation is "now" for
both sides (staleness is its own test).

``tests/test_parity.py`` asserts on ``measure``; ``bench/parity.py`` reports it.
"""

from __future__ import annotations

import os

import numpy as np
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message
from sage_cognition.cognition_node import CognitionNode
from sage_interop import bag
from sage_msgs.msg import Feature
from sage_ros.common import qos_from_name
from sage_sensors.sensor_nodes import CameraNode, ImuNode, MicrophoneNode
from sage_sleep.agent import COGNITION, SensePipeline
from std_msgs.msg import String

from sage_testing.graph import Graph
from sage_testing.realbag import CHUNK, SECONDS, T0, build_bag, real_data

TOPICS = {'/camera/image_raw': 'vision', '/audio/chunk': 'audio', '/imu/data_raw': 'imu'}


def offline(frames, chunks, imu, text: str) -> dict:
    """Sensed records of each modality, in order, from the offline pipeline."""
    pipe = SensePipeline()
    out = {m: [] for m in ('vision', 'audio', 'imu', COGNITION)}
    for i, frame in enumerate(frames):
        t = T0 + i / 10.0
        out['vision'].append(pipe.camera.step(frame, t, t))
    for i, chunk in enumerate(chunks):
        t = T0 + i * CHUNK / 16000
        out['audio'].append(pipe.microphone.step(chunk, 16000, t, t))
    for k in range(int(SECONDS * imu.rate_hz)):
        t = T0 + k / imu.rate_hz
        out['imu'].append(pipe.imu.step(imu.accel[k], imu.gyro[k], t, t))
    out[COGNITION].append(pipe.plan.instruct(text, T0))
    return {m: [s for s in v if s is not None] for m, v in out.items()}


def through_the_graph(bag_path: str, timeout: float = 60.0) -> dict:
    """Features the nodes publish for the bag's messages, in order."""
    sim = [Parameter('use_sim_time', value=True)]
    with Graph() as g:
        nodes = {'vision': g.add(CameraNode(context=g.context, parameter_overrides=sim)),
                 'audio': g.add(MicrophoneNode(context=g.context, parameter_overrides=sim)),
                 'imu': g.add(ImuNode(context=g.context, parameter_overrides=sim))}
        g.add(CognitionNode(context=g.context, parameter_overrides=sim))
        got = {m: g.collect(Feature, f'sage/features/{m}', 1000)
               for m in (*nodes, COGNITION)}
        instruction = g.publisher(String, 'sage/instruction', qos_from_name('LATCHED'))
        for topic, msgtype, _, data in bag.read(bag_path):
            msg = deserialize_message(data, bag.message_class(msgtype))
            if topic == '/sage/instruction':
                instruction.publish(msg)
                continue
            node = nodes[TOPICS[topic]]
            node.process(msg)            # the subscription's callback, without a lossy queue
            # a few in flight at most: the publisher keeps the last 10
            assert g.wait_for(lambda: node.published - len(got[TOPICS[topic]]) < 4, timeout)
        for m, node in nodes.items():
            assert g.wait_for(lambda: len(got[m]) == node.published, timeout), m
        assert g.wait_for(lambda: got[COGNITION], timeout), 'no instruction feature'
        return {m: list(v) for m, v in got.items()}


def measure(workdir: str) -> dict:
    """Build the bag, run both sides, return the summary and per-modality detail."""
    from sage_testing import realdata
    frames, chunks, imu = real_data()
    path = os.path.join(workdir, 'bag')
    build_bag(path, frames, chunks, imu)
    want = offline(frames, chunks, imu, realdata.SPEECH_TEXT)
    got = through_the_graph(path)
    detail = {}
    for m, expected in want.items():
        published = got[m][:1] if m == COGNITION else got[m]   # republished while it stands
        n = min(len(expected), len(published))
        f = max((float(np.abs(np.asarray(p.data) - e.vector).max())
                 for p, e in zip(published, expected)), default=float('inf'))
        t = max((abs(p.trust - e.trust) for p, e in zip(published, expected)),
                default=float('inf'))
        detail[m] = {'offline': len(expected), 'graph': len(published), 'compared': n,
                     'max_feature_diff': f, 'max_trust_diff': t,
                     'min_trust': min(e.trust for e in expected)}
    checked = [m for m, d in detail.items()
               if d['compared'] and d['offline'] == d['graph']]
    summary = {'max_feature_diff': max(d['max_feature_diff'] for d in detail.values()),
               'max_trust_diff': max(d['max_trust_diff'] for d in detail.values()),
               'modalities_checked': len(checked)}
    return {'summary': summary, 'detail': detail}
