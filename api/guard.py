"""A plain ASGI middleware in front of every route: the cheap checks, done before routing.

Plain ASGI rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` costs an
extra task and a body copy per request, which shows at thousands of requests per second.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.requests import ClientDisconnect

from api.metrics import ApiMetrics, method_label
from api.requests import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Observe = Callable[[float], None]

API_KEY_HEADER = "X-API-Key"
OPEN_PATHS = frozenset({"/healthz"})
ADMIN_PREFIX = "/admin/"
SHED_PATHS = frozenset({"/predict"})
"""Routes whose work is bounded by ``max_in_flight`` (the others answer at once)."""
UNMATCHED = "unmatched"
CLIENT_CLOSED = 499
"""The status counted for a request whose client went away before its body arrived (as
nginx counts it; nothing is sent)."""

log = logging.getLogger(__name__)


def is_open(path: str) -> bool:
    """Whether ``path`` needs no key: ``/healthz``, and ``/healthz/`` (redirected to it)."""
    return path in OPEN_PATHS or (path.endswith("/") and path[:-1] in OPEN_PATHS)


def too_large(limit: int) -> JSONResponse:
    """413, and the connection closed after it: the rest of the body is never read."""
    return JSONResponse(
        error_body(f"the body is larger than {limit} bytes"),
        status_code=413,
        headers={"Connection": "close"},
    )


def unavailable(detail: str, retry_after_s: int) -> JSONResponse:
    return JSONResponse(
        error_body(detail), status_code=503, headers={"Retry-After": str(retry_after_s)}
    )


def is_json(content_type: bytes) -> bool:
    """``application/json``, with or without parameters (``; charset=utf-8``)."""
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json"


class Guard:
    """Checks every request in this order, each answered without reading the body:

    1. With an API key configured, every path but ``/healthz`` needs ``X-API-Key`` (or
       ``Authorization: Bearer <key>``; compared in constant time) or gets 401. Without one,
       ``/admin/*`` is not served at all (404).
    2. A ``POST`` whose ``Content-Type`` is not ``application/json`` gets 415 (so no form post
       from a browser page can reach a route), and so does one with a ``Content-Encoding``, or
       a ``Transfer-Encoding`` other than ``chunked`` (a compressed body would otherwise be
       read as JSON and refused as invalid).
    3. A declared body over the limit gets 413.
    4. ``/predict`` with ``max_in_flight`` requests already being handled gets 503 with
       ``Retry-After`` at once (load shedding).
    5. Every request is counted and timed with labels from fixed sets only: method
       ``GET``/``POST``/``OTHER``, one of the app's routes or ``unmatched``, and the status.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ApiMetrics,
        api_key: SecretStr | None,
        max_body_bytes: int,
        max_in_flight: int,
        retry_after_s: int,
        known_paths: set[str],
    ) -> None:
        self._app = app
        self._metrics = metrics
        self._key = api_key.get_secret_value().encode() if api_key is not None else None
        self._max = max_body_bytes
        self._max_in_flight = max_in_flight
        self._retry_after = retry_after_s
        self._known = known_paths
        self.in_flight = 0
        # Read when scraped: no gauge update (and its lock) twice per request.
        metrics.in_flight.set_function(lambda: self.in_flight)
        self._observers: dict[tuple[str, str, str], tuple[Callable[[], None], Observe]] = {}

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

        counted = False
        try:
            rejection = self._reject(scope)
            if rejection is None and scope["path"] in SHED_PATHS:
                if self.in_flight >= self._max_in_flight:
                    self._metrics.shed.labels("in_flight").inc()
                    rejection = unavailable("overloaded: try again later", self._retry_after)
                else:
                    counted = True
                    self.in_flight += 1
            if rejection is not None:
                await rejection(scope, receive, send_and_watch)
            else:
                await self._app(scope, receive, send_and_watch)
        except ClientDisconnect:
            # The client closed the connection (or sent a broken body) mid-request: nobody
            # is left to answer, and it is not the server's error.
            status = CLIENT_CLOSED
            log.info(
                "%s %s: the client went away before its request was read",
                scope["method"],
                scope["path"],
                extra={"event": "client_disconnected"},
            )
        finally:
            if counted:
                self.in_flight -= 1
            route = getattr(scope.get("route"), "path", None)
            if route not in self._known:  # answered before routing, or no route matched
                route = scope["path"] if scope["path"] in self._known else UNMATCHED
            count, observe = self._observer(method_label(scope["method"]), route, str(status))
            count()
            observe(time.perf_counter() - started)

    def _observer(self, method: str, route: str, status: str) -> tuple[Callable[[], None], Observe]:
        """The request counter's and latency histogram's children for these labels, looked up
        once (``labels()`` takes a lock and builds a key on every call)."""
        labels = (method, route, status)
        found = self._observers.get(labels)
        if found is None:
            found = (
                self._metrics.requests.labels(*labels).inc,
                self._metrics.latency.labels(*labels).observe,
            )
            self._observers[labels] = found
        return found

    def _key_problem(self, raw_headers: list[tuple[bytes, bytes]]) -> str | None:
        """Why the request's credentials do not pass; None when they do. The key is sent as
        ``X-API-Key`` or as ``Authorization: Bearer`` (what Prometheus' ``authorization`` block
        sends); either matching passes. Several values of one header are refused: which one
        counts would depend on the proxy in between."""
        keys = [v.strip(b" \t") for k, v in raw_headers if k == b"x-api-key"]
        authorizations = [v for k, v in raw_headers if k == b"authorization"]
        bearers = [v[7:].strip(b" \t") for v in authorizations if v[:7].lower() == b"bearer "]
        if len(keys) > 1 or len(authorizations) > 1:
            return f"more than one API key sent (header {API_KEY_HEADER} or Authorization)"
        key = self._key
        assert key is not None
        # Both compared, whatever the first gives: the time taken says nothing about either.
        matches = [hmac.compare_digest(given, key) for given in (*keys, *bearers)]
        if any(matches):
            return None
        return f"missing or wrong API key (header {API_KEY_HEADER})"

    def _reject(self, scope: Scope) -> JSONResponse | None:
        headers = dict(scope["headers"])
        path: str = scope["path"]
        if path.startswith(ADMIN_PREFIX) and self._key is None:
            return JSONResponse(error_body("not found"), status_code=404)
        if self._key is not None and not is_open(path):
            problem = self._key_problem(scope["headers"])
            if problem is not None:
                return JSONResponse(
                    error_body(problem),
                    status_code=401,
                    headers={"WWW-Authenticate": API_KEY_HEADER},
                )
        types = [v for k, v in scope["headers"] if k == b"content-type"]
        if scope["method"] == "POST" and (len(types) != 1 or not is_json(types[0])):
            return JSONResponse(
                error_body("the body must be JSON: send Content-Type: application/json"),
                status_code=415,
            )
        encodings = [v.strip().lower() for k, v in scope["headers"] if k == b"content-encoding"]
        encoding = next((e for e in encodings if e not in {b"", b"identity"}), None)
        if scope["method"] == "POST" and encoding is not None:
            name = encoding.decode("latin-1")[:32]
            return JSONResponse(
                error_body(f"Content-Encoding {name} is not supported: send the body as it is"),
                status_code=415,
            )
        codings = [
            c.strip().lower()
            for k, v in scope["headers"]
            if k == b"transfer-encoding"
            for c in v.split(b",")
        ]
        coding = next((c for c in codings if c not in {b"", b"chunked", b"identity"}), None)
        if scope["method"] == "POST" and coding is not None:
            name = coding.decode("latin-1")[:32]
            return JSONResponse(
                error_body(f"Transfer-Encoding {name} is not supported: send the body as it is"),
                status_code=415,
            )
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self._max:
            return too_large(self._max)
        return None
