"""Bench for sage_viz: bag write/read rate, replay timing, Foxglove latency, GR00T round trip.

    python bench/viz.py  ->  bench/results/viz.json

Images are real photographs (skimage.data) at the world's 160x120; the GR00T
server is a local ZeroMQ REP socket answering with a 16x7 chunk, so the round
trip is the bridge's own cost (serialisation, ZeroMQ), not a model's.
"""

import asyncio
import io
import json
import os
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write  # noqa: E402


def pct(values, q):
    return round(float(np.percentile(values, q)), 3)


def photos(n):
    import skimage.data
    imgs = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    out = []
    for i in range(n):
        img = imgs[i % len(imgs)]
        ys = np.linspace(0, img.shape[0] - 1, 120).astype(int)
        xs = np.linspace(0, img.shape[1] - 1, 160).astype(int)
        out.append(np.ascontiguousarray(img[ys][:, xs]))
    return out


def bench_bags(tmp):
    from rclpy.serialization import serialize_message
    from sage_ros.image_conv import numpy_to_image
    from sage_interop.bag import play, read, Recorder
    data = [serialize_message(numpy_to_image(img, 'rgb8')) for img in photos(300)]
    out = {}
    for storage in ('mcap', 'sqlite3'):
        path = os.path.join(tmp, storage)
        t = time.perf_counter()
        rec = Recorder(path, storage)
        rec.add_topic('/camera/image_raw', 'sensor_msgs/msg/Image')
        for i, blob in enumerate(data):
            rec.write('/camera/image_raw', blob, int(1e9 * (1 + i / 10)))
        rec.close()
        wrote = time.perf_counter() - t
        t = time.perf_counter()
        n = sum(1 for _ in read(path))
        out[storage] = {'write_msgs_per_s': round(len(data) / wrote),
                        'read_msgs_per_s': round(n / (time.perf_counter() - t)),
                        'mb_per_s_write': round(sum(map(len, data)) / wrote / 1e6, 1)}
    # replay timing: how late each message leaves against the bag's schedule (10 Hz, 3 s)
    late, first = [], []

    def publish(topic, msgtype, blob):
        now = time.monotonic()
        first.append(first[0] if first else now)
        late.append((now - first[0]) - (len(late) / 10.0))
    path = os.path.join(tmp, 'mcap')
    play(path, publish, rate=1.0, topics=None, should_stop=lambda: len(late) >= 30)
    out['replay_lateness_ms'] = {'p50': pct(np.array(late) * 1e3, 50),
                                 'p99': pct(np.array(late) * 1e3, 99)}
    return out


def bench_foxglove(n=200):
    import websockets
    from rclpy.parameter import Parameter
    from sage_testing.graph import Graph
    from sage_msgs.msg import Coherence
    from sage_viz.foxglove_node import FoxgloveNode
    sent, got = {}, {}
    with Graph() as g:
        node = g.add(FoxgloveNode(context=g.context, parameter_overrides=[
            Parameter('port', value=0)]))
        pub = g.publisher(Coherence, 'sage/coherence')

        async def run():
            async with websockets.connect(f'ws://127.0.0.1:{node.port}',
                                          subprotocols=['foxglove.sdk.v1']) as ws:
                channels = {}
                while '/sage/coherence' not in channels:
                    msg = json.loads(await ws.recv())
                    if msg['op'] == 'advertise':
                        channels.update({c['topic']: c['id'] for c in msg['channels']})
                await ws.send(json.dumps({'op': 'subscribe', 'subscriptions': [
                    {'id': 1, 'channelId': channels['/sage/coherence']}]}))
                await asyncio.sleep(0.5)
                for i in range(n):
                    sent[i] = time.perf_counter()
                    pub.publish(Coherence(act_steps=i % 200, latency_ms=float(i)))
                    while True:
                        try:
                            frame = await asyncio.wait_for(ws.recv(), 1.0)
                        except asyncio.TimeoutError:
                            break
                        if isinstance(frame, bytes) and frame[0] == 1:
                            k = int(json.loads(frame[13:])['latency_ms'])
                            got[k] = time.perf_counter()
                            if k == i:
                                break
                    await asyncio.sleep(0.01)
        asyncio.run(run())
    lat = [1e3 * (got[i] - sent[i]) for i in got]
    return {'received': len(got), 'sent': n, 'p50_ms': pct(lat, 50), 'p99_ms': pct(lat, 99)}


def bench_groot(n=100):
    import msgpack
    import zmq
    from sage_interop.groot import GrootClient, observation, pack

    def enc(obj):
        buf = io.BytesIO()
        np.save(buf, obj, allow_pickle=False)
        return {'__ndarray_class__': True, 'as_npy': buf.getvalue()}
    sock = zmq.Context.instance().socket(zmq.REP)
    port = sock.bind_to_random_port('tcp://127.0.0.1')
    answer = msgpack.packb([{'arm': np.zeros((1, 16, 7), np.float32)}, {}], default=enc)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            if sock.poll(50):
                sock.recv()
                sock.send(answer)
    threading.Thread(target=serve, daemon=True).start()
    client = GrootClient(port=port, timeout_s=5.0)
    obs = observation({'ego_view': photos(1)[0].repeat(2, 0).repeat(2, 1)[:224, :224]},
                      {'arm': np.zeros(7)}, 'pick up the cube')
    times = []
    for _ in range(n):
        t = time.perf_counter()
        client.get_action(obs)
        times.append(1e3 * (time.perf_counter() - t))
    stop.set()
    client.close()
    request = pack({'endpoint': 'get_action', 'data': {'observation': obs, 'options': None}})
    return {'p50_ms': pct(times, 50), 'p99_ms': pct(times, 99), 'request_bytes': len(request)}


def main():
    """Run the benches and write bench/results/viz.json."""
    with tempfile.TemporaryDirectory() as tmp:
        bags = bench_bags(tmp)
    fox = bench_foxglove()
    groot = bench_groot()
    summary = {
        'bag_write_msgs_per_s_mcap': bags['mcap']['write_msgs_per_s'],
        'bag_write_msgs_per_s_sqlite3': bags['sqlite3']['write_msgs_per_s'],
        'bag_read_msgs_per_s_mcap': bags['mcap']['read_msgs_per_s'],
        'replay_lateness_p99_ms': bags['replay_lateness_ms']['p99'],
        'foxglove_latency_p50_ms': fox['p50_ms'], 'foxglove_latency_p99_ms': fox['p99_ms'],
        'groot_roundtrip_p50_ms': groot['p50_ms'], 'groot_roundtrip_p99_ms': groot['p99_ms'],
    }
    rows = [('measure', 'value'),
            ('bag write 160x120 rgb8, mcap / sqlite3 (msgs/s)',
             f'{bags["mcap"]["write_msgs_per_s"]} / {bags["sqlite3"]["write_msgs_per_s"]}'),
            ('bag read, mcap / sqlite3 (msgs/s)',
             f'{bags["mcap"]["read_msgs_per_s"]} / {bags["sqlite3"]["read_msgs_per_s"]}'),
            ('replay lateness vs bag schedule, p50 / p99 (ms)',
             f'{bags["replay_lateness_ms"]["p50"]} / {bags["replay_lateness_ms"]["p99"]}'),
            ('Foxglove: ROS publish -> WebSocket client, p50 / p99 (ms)',
             f'{fox["p50_ms"]} / {fox["p99_ms"]} ({fox["received"]}/{fox["sent"]})'),
            ('GR00T get_action round trip, 224x224 image, p50 / p99 (ms)',
             f'{groot["p50_ms"]} / {groot["p99_ms"]} ({groot["request_bytes"]} B request)')]
    write('viz', summary, rows, {'bags': bags, 'foxglove': fox, 'groot': groot})


if __name__ == '__main__':
    main()
