"""Exit 0 if a MongoDB wire-protocol server on 127.0.0.1:PORT answers ``ping`` with ok: 1.

Used by ``infra/local-servers.sh`` to wait for the local MongoDB-compatible server: an open
port is not enough (a JVM binds before its backend is ready). Standard library only, so it runs
before the project's virtual environment exists: one OP_MSG ``{ping: 1, $db: "admin"}``.
Usage: ``python3 infra/wire_ping.py PORT [TIMEOUT_S]``.
"""

from __future__ import annotations

import socket
import struct
import sys

OP_MSG = 2013


def _bson_ping() -> bytes:
    body = b"\x10ping\x00" + struct.pack("<i", 1)
    body += b"\x02$db\x00" + struct.pack("<i", 6) + b"admin\x00"
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def ping(port: int, timeout_s: float = 2.0) -> bool:
    """Whether the server answers the ping with ``ok: 1.0``."""
    payload = struct.pack("<I", 0) + b"\x00" + _bson_ping()
    message = struct.pack("<iiii", 16 + len(payload), 1, 0, OP_MSG) + payload
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(message)
            header = _read(sock, 16)
            length, _, response_to, op_code = struct.unpack("<iiii", header)
            reply = _read(sock, length - 16)
    except (OSError, struct.error):
        return False
    ok_double = b"\x01ok\x00" + struct.pack("<d", 1.0)
    return response_to == 1 and op_code == OP_MSG and ok_double in reply


def _read(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise OSError("connection closed")
        chunks += chunk
    return bytes(chunks)


if __name__ == "__main__":
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    sys.exit(0 if ping(int(sys.argv[1]), timeout) else 1)
