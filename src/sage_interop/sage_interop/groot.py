"""A client for the GR00T policy server's ZeroMQ protocol. ROS-free.

NVIDIA Isaac GR00T serves a policy over ZeroMQ REQ/REP. A request is a
msgpack map ``{"endpoint": NAME, "data": {...}}`` (plus ``"api_token"`` when
the server wants one); endpoints include ``ping``, ``reset``,
``get_modality_config`` and ``get_action``. numpy arrays travel as maps
``{"__ndarray_class__": true, "as_npy": <bytes of np.save>}``. A server error
comes back as ``{"error": message}``. Two generations of the server differ in
what ``get_action`` carries:

- ``n1.6`` (gr00t/policy/server_client.py, ``run_gr00t_server.py``): data is
  ``{"observation": obs, "options": None}`` with a nested, batched obs
  ``{"video": {camera: B×T×H×W×3 uint8}, "state": {part: B×T×D float32},
  "language": {"task": [[text]]}}``; the answer is ``[action, info]`` with
  ``action = {part: B×horizon×D}``.
- ``n1.5`` (gr00t/eval/service.py, ``scripts/inference_service.py``): data is
  the flat obs itself, ``video.<camera>`` (T×H×W×3), ``state.<part>`` (T×D),
  ``annotation.human.action.task_description`` ([text]); the answer maps
  ``action.<part>`` to chunks (horizon × D).

Either way `GrootClient.get_action` returns ``{"action.<part>": horizon×D}``.
"""

from __future__ import annotations

import io

import msgpack
import numpy as np

TASK_KEY = 'annotation.human.action.task_description'
PROTOCOLS = ('n1.6', 'n1.5')


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


def observation(images: dict, states: dict, task: str, horizon: int = 1,
                protocol: str = 'n1.6', language_key: str = 'task') -> dict:
    """Build a GR00T observation: images {camera: H×W×3 uint8}, states {part: vector}."""
    if protocol not in PROTOCOLS:
        raise ValueError(f'unknown GR00T protocol {protocol!r}; choose one of {PROTOCOLS}')
    video = {k: np.repeat(np.asarray(v, np.uint8)[None], horizon, 0) for k, v in images.items()}
    if protocol == 'n1.5':
        obs = {f'video.{k}': v for k, v in video.items()}
        obs.update({f'state.{k}': np.repeat(np.asarray(v, np.float64)[None], horizon, 0)
                    for k, v in states.items()})
        obs[TASK_KEY] = [task]
        return obs
    return {'video': {k: v[None] for k, v in video.items()},            # batch of one
            'state': {k: np.repeat(np.asarray(v, np.float32)[None], horizon, 0)[None]
                      for k, v in states.items()},
            'language': {language_key: [[task]]}}


class GrootClient:
    """REQ socket to a GR00T policy server, with a receive timeout and reconnect on failure."""

    def __init__(self, host: str = '127.0.0.1', port: int = 5555, timeout_s: float = 5.0,
                 api_token: str = '', protocol: str = 'n1.6'):
        import zmq
        if protocol not in PROTOCOLS:
            raise ValueError(f'unknown GR00T protocol {protocol!r}; choose one of {PROTOCOLS}')
        self.protocol = protocol
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
        sock = self._socket
        try:
            sock.send(pack(request))
            answer = unpack(sock.recv())
        except zmq.ZMQError as exc:
            sock.close()                    # a REQ socket is stuck after a timeout: renew it
            self._socket = None
            raise GrootError(f'no answer from {self.address} within '
                             f'{self.timeout_ms / 1000:.1f} s ({exc})') from exc
        if isinstance(answer, dict) and 'error' in answer:
            raise GrootError(f'{self.address} {endpoint}: {answer["error"]}')
        return answer

    def get_action(self, obs: dict) -> dict:
        """Return {'action.<part>': horizon×D chunk} for an observation (see observation())."""
        if self.protocol == 'n1.5':
            actions = self.call('get_action', obs)
        else:
            answer = self.call('get_action', {'observation': obs, 'options': None})
            if not isinstance(answer, (list, tuple)) or len(answer) != 2:
                raise GrootError(f'get_action answered {type(answer).__name__}, not '
                                 f'[action, info]: is the server GR00T N1.5 (protocol n1.5)?')
            actions = answer[0]
        if not isinstance(actions, dict) or not actions:
            raise GrootError(f'get_action answered {type(actions).__name__}, not action chunks')
        out = {}
        for k, v in actions.items():
            v = np.asarray(v)
            if self.protocol == 'n1.6':
                v = v[0] if v.ndim == 3 else v                    # our batch of one
            out[k if k.startswith('action.') else f'action.{k}'] = v
        return out

    def close(self) -> None:
        """Close the socket."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
