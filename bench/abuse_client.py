"""The abuse benchmark's HTTP client: pre-built requests on keep-alive connections (costs far
less CPU than the server it loads), and the outcomes by status."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from bench.results import percentiles

KEY = "bench-key-0123456789abcdef"


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: sidecar\r\nx-api-key: {KEY}\r\n\r\n".encode()


def post(path: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nhost: sidecar\r\nx-api-key: {KEY}\r\n"
        f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Conn:
    """One keep-alive HTTP/1.1 connection; answers (status, body)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class Pool:
    """Connections handed out one request at a time; a broken one is replaced."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[Conn] = []

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        conn = self.idle.pop() if self.idle else await Conn.open(self.port)
        try:
            answer = await conn.request(raw)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            await conn.close()
            raise
        self.idle.append(conn)
        return answer

    async def close(self) -> None:
        for conn in self.idle:
            await conn.close()


@dataclass
class Outcomes:
    latencies_ms: dict[int, list[float]] = field(default_factory=dict)
    errors: int = 0
    started: float = field(default_factory=time.perf_counter)
    ended: float = 0.0

    def add(self, status: int, ms: float) -> None:
        self.latencies_ms.setdefault(status, []).append(ms)

    def count(self, status: int) -> int:
        return len(self.latencies_ms.get(status, []))

    def rate(self, status: int) -> float:
        return self.count(status) / max(self.ended - self.started, 1e-9)

    def summary(self) -> dict[str, Any]:
        return {
            "seconds": round(self.ended - self.started, 2),
            "connection_errors": self.errors,
            **{
                str(status): {"count": len(ms), **percentiles(ms, (50, 99, 100))}
                for status, ms in sorted(self.latencies_ms.items())
            },
        }


async def timed(pool: Pool, raw: bytes, out: Outcomes) -> tuple[int, bytes] | None:
    started = time.perf_counter()
    try:
        status, body = await pool.request(raw)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        out.errors += 1
        return None
    out.add(status, (time.perf_counter() - started) * 1000)
    return status, body
