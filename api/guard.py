"""A plain ASGI middleware in front of every route: API key, body size limit, metrics.

Plain ASGI rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` costs an
extra task and a body copy per request, which shows at thousands of requests per second.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import SecretStr

from api.metrics import ApiMetrics
from api.requests import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

API_KEY_HEADER = "X-API-Key"
OPEN_PATHS = frozenset({"/healthz"})


def too_large(limit: int) -> JSONResponse:
    return JSONResponse(error_body(f"the body is larger than {limit} bytes"), status_code=413)


class Guard:
    """1. With an API key configured, every path but ``/healthz`` needs ``X-API-Key`` (compared
    in constant time) or gets 401. 2. A declared body over the limit gets 413 before it is
    read. 3. Every request is counted and timed by method, route and status."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ApiMetrics,
        api_key: SecretStr | None,
        max_body_bytes: int,
        known_paths: set[str],
    ) -> None:
        self._app = app
        self._metrics = metrics
        self._key = api_key.get_secret_value().encode() if api_key is not None else None
        self._max = max_body_bytes
        self._known = known_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            rejection = self._reject(scope)
            if rejection is not None:
                await rejection(scope, receive, send_and_watch)
            else:
                await self._app(scope, receive, send_and_watch)
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route is None:  # answered before routing (401, 413): label it by its path
                route = scope["path"] if scope["path"] in self._known else "unmatched"
            labels = (scope["method"], route, str(status))
            self._metrics.requests.labels(*labels).inc()
            self._metrics.latency.labels(*labels).observe(time.perf_counter() - started)

    def _reject(self, scope: Scope) -> JSONResponse | None:
        headers = dict(scope["headers"])
        if self._key is not None and scope["path"] not in OPEN_PATHS:
            given = headers.get(API_KEY_HEADER.lower().encode(), b"")
            if not hmac.compare_digest(given, self._key):
                return JSONResponse(
                    error_body(f"missing or wrong API key (header {API_KEY_HEADER})"),
                    status_code=401,
                    headers={"WWW-Authenticate": API_KEY_HEADER},
                )
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self._max:
            return too_large(self._max)
        return None
