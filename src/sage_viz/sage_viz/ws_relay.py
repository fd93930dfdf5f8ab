"""A WebSocket relay so that every Foxglove client connects: old protocol name or new.

ROS-free. foxglove-sdk's server speaks ``foxglove.sdk.v1`` only, which is wire-compatible
with the published Foxglove WebSocket protocol ``foxglove.websocket.v1`` (the subprotocol
of @foxglove/ws-protocol, Lichtblick and foxglove_bridge's clients), yet refuses clients
that offer only the older name. The relay listens on the public address, accepts either
name, and joins each client to the SDK server (on an internal port) as
``foxglove.sdk.v1``, passing every frame unchanged both ways (text stays text, binary
stays binary).
"""

from __future__ import annotations

import asyncio
import threading

SUBPROTOCOLS = ('foxglove.websocket.v1', 'foxglove.sdk.v1')


class ProtocolRelay:
    """Serve ``host:port`` (0: any free port) and relay each client to ``upstream_url``."""

    def __init__(self, host: str, port: int, upstream_url: str):
        self.upstream_url = upstream_url
        self.clients = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(host, port), daemon=True,
                                        name='foxglove_relay')
        self._thread.start()
        self._ready.wait(10.0)
        if self._error is not None:
            raise OSError(f'cannot serve ws://{host}:{port}: {self._error}') from self._error

    def _run(self, host: str, port: int) -> None:
        from websockets.asyncio.server import serve
        asyncio.set_event_loop(self._loop)

        async def start():    # a client's frames: at most 16 MiB (it may only subscribe)
            return await serve(self._handle, host, port, subprotocols=list(SUBPROTOCOLS),
                               max_size=2**24, compression=None)
        try:
            self._server = self._loop.run_until_complete(start())
        except Exception as exc:  # the port is taken, the address not ours, ...
            self._error = exc
            self._ready.set()
            return
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, client) -> None:
        import websockets
        from websockets.asyncio.client import connect
        self.clients += 1
        try:
            async with connect(self.upstream_url, subprotocols=['foxglove.sdk.v1'],
                               max_size=None, compression=None) as upstream:
                await asyncio.gather(_pipe(client, upstream), _pipe(upstream, client))
        except (OSError, websockets.WebSocketException):
            await client.close(1011, 'the Foxglove server behind the relay is not reachable')
        finally:
            self.clients -= 1

    def stop(self) -> None:
        """Close the listening socket and every relayed connection."""
        if self._error is not None or not self._loop.is_running():
            return

        async def close():
            self._server.close()
            await self._server.wait_closed()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)


async def _pipe(src, dst) -> None:
    import websockets
    try:
        async for frame in src:
            await dst.send(frame)
    except websockets.ConnectionClosed:
        pass
    finally:
        await dst.close()
