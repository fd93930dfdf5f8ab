"""The shared guard: a raising callback is counted and reported, and the node goes on."""

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sage_msgs.srv import Snapshot
from sage_ros.common import Diagnostics
from sage_ros.guard import GuardedNode
from sage_testing.graph import Graph
from std_msgs.msg import Int32


class Fragile(GuardedNode):
    """Raises on odd numbers, in a subscription, a timer and a service."""

    def __init__(self, **kwargs):
        super().__init__('fragile', **kwargs)
        self.diag = Diagnostics(self, period_s=0.2)
        self.seen = []
        self.ticks = 0
        self.create_subscription(Int32, 'numbers', self._on_number, 10)
        self.create_timer(0.05, self._tick)
        self.create_service(Snapshot, 'snap', self._snap)

    def _on_number(self, msg):
        if msg.data % 2:
            raise ValueError(f'odd number {msg.data}')
        self.seen.append(msg.data)

    def _tick(self):
        self.ticks += 1
        if self.ticks == 3:
            raise RuntimeError('third tick')

    def _snap(self, request, response):
        raise OSError('disk full')


def test_a_raising_callback_is_counted_reported_and_the_node_goes_on():
    with Graph() as g:
        node = g.add(Fragile(context=g.context))
        diags = g.collect(DiagnosticArray, 'diagnostics')
        pub = g.publisher(Int32, 'numbers')
        assert g.wait_for(lambda: pub.get_subscription_count() == 1, 10)
        for i in range(6):
            pub.publish(Int32(data=i))
        assert g.wait_for(lambda: node.seen == [0, 2, 4], 10)      # after 1 and 3 raised
        assert g.wait_for(lambda: node.guard.errors['subscription numbers'] == 3, 10)
        ticks = node.ticks
        assert g.wait_for(lambda: node.ticks > ticks + 3)            # the timer goes on
        assert node.guard.errors['timer _tick'] == 1
        client = g.probe.create_client(Snapshot, 'snap')
        assert client.wait_for_service(timeout_sec=10)
        future = client.call_async(Snapshot.Request(path=''))
        assert g.wait_for(future.done, 10)
        assert future.result().success is False                      # the default answer
        assert node.guard.errors['service snap'] == 1

        def reported():
            st = [s for d in diags for s in d.status]
            return st and st[-1].level == DiagnosticStatus.WARN and \
                'disk full' in st[-1].message and \
                {v.key: v.value for v in st[-1].values}.get('callback_errors') == '5'
        assert g.wait_for(reported, 10)
