"""``POST /predict`` straight to its handler, past FastAPI's router and middleware.

The route stays registered with FastAPI (its OpenAPI description, ``405`` for other methods,
the trailing-slash redirect), but a ``POST`` to exactly ``/predict`` is answered here: at
thousands of requests per second FastAPI's per-request machinery (exception and exit-stack
middleware, route matching, dependency solving) cost about 70% of the event loop's time per
request (cProfile of the sidecar at concurrency 64), and every microsecond of it is spent on
the loop while 63 other requests wait. :class:`FrontedApp` puts the guard and this in front of
FastAPI itself, so ``/predict`` also skips its error middlewares and its telemetry checks.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.routing import BaseRoute

from api.deps import sidecar_of
from api.guard import ASGIApp, Receive, Scope, Send
from api.requests import error_body
from api.routes import predict

PATH = "/predict"


class DirectPredict:
    """Answers ``POST /predict`` with :func:`api.routes.predict` and the same responses the
    routed call gives: the handler's, or the error body with 503 while the sidecar is
    not running. Anything else goes on to ``app``. The request's ``scope["route"]`` is the
    registered route, as routing would have set it (the guard labels metrics with it)."""

    def __init__(self, app: ASGIApp, *, route: BaseRoute) -> None:
        self._app = app
        self._route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
            await self._app(scope, receive, send)
            return
        scope["route"] = self._route
        scope.setdefault("path_params", {})
        request = Request(scope, receive)
        try:
            sidecar = sidecar_of(scope["app"])
        except HTTPException as exc:
            await JSONResponse(error_body(str(exc.detail)), status_code=exc.status_code)(
                scope, receive, send
            )
            return
        response = await predict(request, sidecar)
        await response(scope, receive, send)


class FrontedApp(FastAPI):
    """A FastAPI app whose HTTP requests pass through ``front`` first (the guard, then
    :class:`DirectPredict`), which hands what it does not answer to FastAPI as usual
    (:meth:`framework`). Lifespan events go to FastAPI directly. Until ``front`` is set, the
    app is a plain FastAPI app.

    A ``/predict`` that raises is answered 500 by the server (uvicorn), as FastAPI's error
    middleware would: plain text, and the exception logged.
    """

    def __init__(self, **kwargs: Any) -> None:
        # No OpenTelemetry here (metrics are Prometheus'): FastAPI would otherwise look up
        # the global providers on every request.
        kwargs.setdefault("telemetry", {"tracing": False, "metrics": False, "logs": False})
        super().__init__(**kwargs)
        self.front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front = self.front
        if front is None or scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        await front(scope, receive, send)

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's own handling of a request (its middlewares, router and routes)."""
        await super().__call__(scope, receive, send)
