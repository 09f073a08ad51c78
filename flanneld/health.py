"""-healthz-ip/-healthz-port: /healthz (200 while running), /readyz (200 once ready),
/metrics (Prometheus), /counters and /status (JSON, for programs; `flanneld status` reads
the latter).

A minimal HTTP/1.0 responder on asyncio streams; enough for probes and curl.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from lease.errors import ConfigError

from .metrics import CONTENT_TYPE, render

log = logging.getLogger(__name__)

_REASONS: Final = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Unavailable"}


@dataclass(slots=True)
class HealthState:
    ready: bool = False
    counters: Callable[[], Mapping[str, Any]] = field(default=lambda: {})
    status: Callable[[], Mapping[str, Any]] = field(default=lambda: {})


def respond(state: HealthState, method: str, path: str) -> tuple[int, str, str]:
    """Routing: (status, content type, body) for a request line."""
    text, as_json = "text/plain", "application/json"
    if method not in ("GET", "HEAD"):
        return 405, text, "method not allowed\n"
    if path == "/healthz":
        return 200, text, "ok\n"
    if path == "/readyz":
        return (200, text, "ready\n") if state.ready else (503, text, "not ready\n")
    if path == "/metrics":
        return 200, CONTENT_TYPE, render(state.counters).decode()
    if path == "/counters":
        return 200, as_json, json.dumps(state.counters(), sort_keys=True) + "\n"
    if path == "/status":
        return 200, as_json, json.dumps(state.status(), sort_keys=True) + "\n"
    return 404, text, "not found\n"


class HealthServer:
    def __init__(self, state: HealthState, host: str, port: int) -> None:
        self._state, self._host, self._port = state, host, port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen; ConfigError (one line) if the address is taken or not ours."""
        try:
            self._server = await asyncio.start_server(self._serve, self._host, self._port)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfigError(f"-healthz-port {self._port}: cannot listen on "
                              f"{self._host}:{self._port}: {reason}") from None
        log.info("healthz listening address=%s port=%d", self._host, self._port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()).strip():
                    pass
            parts = request.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?")[0]) if len(parts) >= 2 else ("", "")
            status, kind, body = respond(self._state, method, path)
            payload = body.encode()
            head = (f"HTTP/1.0 {status} {_REASONS[status]}\r\nContent-Type: {kind}\r\n"
                    f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n")
            writer.write(head.encode() + (payload if method != "HEAD" else b""))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
