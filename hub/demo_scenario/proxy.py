"""The outbound HTTP proxy of an agency's network, for the demo's county office system (adapters.sdk's
``gateway_proxy``) and the SDK's tests: the standard CONNECT tunnel, nothing of what goes through it read."""

from __future__ import annotations

import asyncio

__all__ = ["ConnectProxy"]


class ConnectProxy:
    """An agency's outbound HTTP proxy, as squid is for HTTPS: ``CONNECT host:port``, then bytes both ways (the demo's
    county network, and the SDK's tests). It says which targets it was asked for; ``login`` (user, password) makes it
    answer 407 without them, ``forbid`` 403. ``async with`` serves it on a free port of 127.0.0.1 (``url``)."""

    def __init__(self, *, login: tuple[str, str] | None = None, forbid: bool = False) -> None:
        self.login, self.forbid = login, forbid
        self.targets: list[str] = []
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> ConnectProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import base64

        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, target, _ = head[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in head[1:] if ":" in h)}
            self.targets.append(f"{method} {target}")
            wanted = "Basic " + base64.b64encode(":".join(self.login).encode()).decode() if self.login else None
            if method != "CONNECT" or self.forbid:
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            if wanted is not None and headers.get("proxy-authorization") != wanted:
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                return
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                try:
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                finally:
                    dst.close()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
