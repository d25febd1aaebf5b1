"""Reading a ``/predict`` body: capped while it streams in, parsed on the loop when small and
in one worker thread when large, with a bounded backlog for that thread."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from fastapi import Request
from fastapi.responses import JSONResponse

from api.guard import too_large, unavailable
from api.metrics import ApiMetrics
from api.parsing import Limits, parse_body
from api.requests import PredictEvent
from settings import ApiSettings

LARGE_BODIES_AT_ONCE = 2
"""Large bodies parsed or waiting for the parser thread; one more is a 503 at once."""


class Refused(Exception):
    """The body is not read or parsed; ``response`` is the answer (413 or 503)."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


class BodyReader:
    """Turns a request into events, or raises :class:`Refused` / :class:`api.parsing.InvalidBody`.

    It guarantees:
    1. No more than ``max_body_bytes`` are buffered: a longer stream is a 413 at that point.
    2. A body of ``parse_in_thread_bytes`` or more is parsed in the one parser thread
       (``json.loads`` and pydantic hold the GIL for a whole large body, ~20 ms per 1 MB, so
       each extra parser thread is one more the loop waits behind); at most
       :data:`LARGE_BODIES_AT_ONCE` are parsed or wait for it, more are a 503 at once.
    """

    def __init__(self, api: ApiSettings, metrics: ApiMetrics) -> None:
        self._api = api
        self._metrics = metrics
        self._limits = Limits(
            api.max_events_per_request,
            api.max_features_per_event,
            api.max_errors_reported,
            one_pass_below=api.parse_in_thread_bytes,
        )
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="streamscore-parse")
        self._large = 0

    async def receive(self, request: Request) -> bytes:
        """The whole body, or :class:`Refused` (413) once it grows past the limit."""
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > self._api.max_body_bytes:
                raise Refused(too_large(self._api.max_body_bytes))
        return bytes(body)

    async def parse(self, raw: bytes) -> tuple[list[PredictEvent], bool]:
        """(events, was_a_list)."""
        if len(raw) < self._api.parse_in_thread_bytes:
            return parse_body(raw, self._limits)
        if self._large >= LARGE_BODIES_AT_ONCE:
            self._metrics.shed.labels("parse").inc()
            raise Refused(unavailable("overloaded: try again later", self._api.retry_after_s))
        self._large += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, parse_body, raw, self._limits)
        finally:
            self._large -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
