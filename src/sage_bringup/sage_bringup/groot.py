"""A client for the GR00T policy server's ZeroMQ protocol. ROS-free.

NVIDIA Isaac GR00T serves a policy over ZeroMQ REQ/REP. A request is a
msgpack map ``{"endpoint": NAME, "data": {...}}`` (plus ``"api_token"`` when
the server wants one); endpoints include ``ping``, ``get_modality_config`` and
``get_action``. numpy arrays travel as maps ``{"__ndarray_class__": true,
"as_npy": <bytes of np.save>}``. An observation holds ``video.<camera>``
(uint8, T×H×W×3), ``state.<part>`` (float, T×D) and
``annotation.human.action.task_description`` (a list of strings); the answer
maps ``action.<part>`` to action chunks (horizon × D). A server error comes
back as ``{"error": message}``.
"""

from __future__ import annotations

import io

import msgpack
import numpy as np

TASK_KEY = 'annotation.human.action.task_description'


class GrootError(RuntimeError):
    """The server did not answer, or answered with an error; the message says which."""


def _encode(obj):
    if isinstance(obj, np.ndarray):
        buf = io.BytesIO()
        np.save(buf, obj, allow_pickle=False)
        return {'__ndarray_class__': True, 'as_npy': buf.getvalue()}
    raise TypeError(f'cannot send a {type(obj).__name__} to GR00T')


def _decode(obj):
    if isinstance(obj, dict) and obj.get('__ndarray_class__'):
        return np.load(io.BytesIO(obj['as_npy']), allow_pickle=False)
    return obj


def pack(message: dict) -> bytes:
    """Serialize a message the way the GR00T server reads it."""
    return msgpack.packb(message, default=_encode, use_bin_type=True)


def unpack(data: bytes):
    """Deserialize a GR00T message (numpy arrays restored)."""
    return msgpack.unpackb(data, object_hook=_decode, raw=False)


def observation(images: dict, states: dict, task: str, horizon: int = 1) -> dict:
    """Build a GR00T observation: images {camera: H×W×3 uint8}, states {part: vector}."""
    obs = {f'video.{k}': np.repeat(np.asarray(v, np.uint8)[None], horizon, 0)
           for k, v in images.items()}
    obs.update({f'state.{k}': np.repeat(np.asarray(v, np.float64)[None], horizon, 0)
                for k, v in states.items()})
    obs[TASK_KEY] = [task]
    return obs


class GrootClient:
    """REQ socket to a GR00T policy server, with a receive timeout and reconnect on failure."""

    def __init__(self, host: str = '127.0.0.1', port: int = 5555, timeout_s: float = 5.0,
                 api_token: str = ''):
        import zmq
        self.address, self.timeout_ms, self.api_token = f'tcp://{host}:{port}', \
            int(timeout_s * 1000), api_token
        self._ctx = zmq.Context.instance()
        self._socket = None

    def _connect(self):
        import zmq
        sock = self._ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.RCVTIMEO, self.timeout_ms)
        sock.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.address)
        return sock

    def call(self, endpoint: str, data: dict | None = None):
        """Send one request and return the decoded answer; raise GrootError on failure."""
        import zmq
        request = {'endpoint': endpoint}
        if data is not None:
            request['data'] = data
        if self.api_token:
            request['api_token'] = self.api_token
        if self._socket is None:
            self._socket = self._connect()
        try:
            self._socket.send(pack(request))
            answer = unpack(self._socket.recv())
        except zmq.ZMQError as exc:
            self._socket.close()            # a REQ socket is stuck after a timeout: renew it
            self._socket = None
            raise GrootError(f'no answer from {self.address} within '
                             f'{self.timeout_ms / 1000:.1f} s ({exc})') from exc
        if isinstance(answer, dict) and 'error' in answer:
            raise GrootError(f'{self.address} {endpoint}: {answer["error"]}')
        return answer

    def get_action(self, obs: dict) -> dict:
        """Return {'action.<part>': chunk array} for an observation."""
        actions = self.call('get_action', obs)
        if not isinstance(actions, dict) or not actions:
            raise GrootError(f'get_action answered {type(actions).__name__}, not action chunks')
        return {k: np.asarray(v) for k, v in actions.items()}

    def close(self) -> None:
        """Close the socket."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
