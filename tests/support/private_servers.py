"""Private, throw-away copies of the local servers, for tests that stop, start or restart one.

The shared servers (Kafka on 9092, the MongoDB-compatible server on 27017) serve every other
test running at the same time and must never be stopped. A test that needs an outage gets its
own server instead:

* :class:`PrivateMongo` runs ``infra/local-servers.sh up|down mongo`` with
  ``STREAMSCORE_MONGO_PORT`` set to a free port: the local server that
  ``STREAMSCORE_LOCAL_MONGO`` selects (``mongo-java-server`` by default, or ``ferretdb``);
* :class:`PrivateKafka` does the same for Kafka with ``STREAMSCORE_KAFKA_PORT`` and
  ``STREAMSCORE_KAFKA_CONTROLLER_PORT`` set to two free ports.

The script keeps each server's data, pid file, config and log per port (under
``$STREAMSCORE_LOCAL_DIR``, default ``<repo>/.local``), so a private server never touches the
files of the shared one: its ``down`` kills only the pid recorded for its own port. Data
survive :meth:`~PrivateServer.stop` (a restart finds them again) and are deleted by
:meth:`~PrivateServer.cleanup`.

Use the function-scoped fixtures ``private_mongo`` / ``private_kafka`` (re-exported by
``tests/conftest.py``): they start the server, and at teardown always stop it and delete its
per-port files, whatever the test did. ``python -m tests.support.private_servers`` is a self-check
that starts one of each next to the shared ones, restarts them and cleans up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Self

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "local-servers.sh"
SHARED_PORTS = frozenset({9092, 9093, 27017})
"""Ports of the shared servers: never handed to a private one."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on right now.

    All sockets are held open until every port is chosen, so the ports differ; the usual
    bind-then-close race remains (the caller retries if the script finds a port taken).
    """
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in SHARED_PORTS:
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports


def port_open(port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout_s):
        return True
    return False


class ServerScriptError(RuntimeError):
    """``infra/local-servers.sh`` failed; the message holds its output."""


class PrivateServer:
    """One server of ``infra/local-servers.sh`` on private ports (see the module docstring).

    Subclasses name the server (``which``), its port variables and its per-port files.
    :meth:`start`/:meth:`stop`/:meth:`restart` block (they run the script); async tests call
    :meth:`astart`/:meth:`astop`/:meth:`arestart`, which run them in a worker thread so the
    event loop keeps going meanwhile.
    """

    which: ClassVar[str]
    port_variables: ClassVar[tuple[str, ...]]
    start_attempts: ClassVar[int] = 3

    def __init__(self, timeout_s: int = 90) -> None:
        self.local_dir = Path(os.environ.get("STREAMSCORE_LOCAL_DIR", str(ROOT / ".local")))
        self.timeout_s = timeout_s
        self.ports = free_ports(len(self.port_variables))
        self.running = False
        self.started_once = False

    @property
    def port(self) -> int:
        """The client port."""
        return self.ports[0]

    @property
    def url(self) -> str:
        """What a client connects to (a MongoDB URL, a Kafka bootstrap address)."""
        raise NotImplementedError

    def files(self) -> list[Path]:
        """This instance's own per-port files and folders (data, state, config, pid, log)."""
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {name: str(port) for name, port in zip(self.port_variables, self.ports, strict=True)}
        )
        env["STREAMSCORE_LOCAL_DIR"] = str(self.local_dir)
        env["STREAMSCORE_UP_TIMEOUT"] = str(self.timeout_s)
        return env

    def _script(self, command: str) -> str:
        done = subprocess.run(
            [str(SCRIPT), command, self.which],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=self.timeout_s + 45,
            check=False,
        )
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise ServerScriptError(
                f"local-servers.sh {command} {self.which} on ports {self.ports} failed "
                f"(exit {done.returncode}):\n{output}"
            )
        return output

    def start(self) -> None:
        """Start the server (again); returns once it answers on :attr:`port`.

        Before the first start, a port another process grabbed in the meantime is replaced by
        a fresh one (a restart keeps its ports: clients are configured with them).
        """
        for attempt in range(self.start_attempts):
            if not self.started_once and any(port_open(p) for p in self.ports):
                self.ports = free_ports(len(self.port_variables))
            try:
                self._script("up")
            except ServerScriptError as exc:
                taken = "is taken by another process" in str(exc)
                if not taken or self.started_once or attempt == self.start_attempts - 1:
                    raise
                self.ports = free_ports(len(self.port_variables))
                continue
            self.running = True
            self.started_once = True
            return

    def stop(self) -> None:
        """Stop the server (TERM, then KILL after 30 s); its data stay for a later start."""
        self._script("down")
        self.running = False

    def restart(self) -> None:
        self.stop()
        self.start()

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def arestart(self) -> None:
        await asyncio.to_thread(self.restart)

    def cleanup(self) -> None:
        """Stop the server if it may be running, then delete every per-port file it made."""
        try:
            self.stop()
        finally:
            for path in self.files():
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.cleanup()


def local_mongo() -> str:
    """The local MongoDB-compatible server ``infra/local-servers.sh`` starts (its default too)."""
    return os.environ.get("STREAMSCORE_LOCAL_MONGO") or "mongo-java-server"


class PrivateMongo(PrivateServer):
    """A private local MongoDB-compatible server on a free port.

    The implementation is the one ``STREAMSCORE_LOCAL_MONGO`` selects when the instance is made
    (:attr:`implementation`), so an outage test runs on the same server as the rest of the run.
    """

    which = "mongo"
    port_variables = ("STREAMSCORE_MONGO_PORT",)

    def __init__(self, timeout_s: int = 90) -> None:
        super().__init__(timeout_s)
        self.implementation = local_mongo()

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        return {**super()._env(), "STREAMSCORE_LOCAL_MONGO": self.implementation}

    def files(self) -> list[Path]:
        port = self.port
        if self.implementation == "ferretdb":
            base = self.local_dir / "ferretdb"
            return [
                base / f"data-{port}",
                base / f"state-{port}",
                base / f"ferretdb-{port}.pid",
                base / f"ferretdb-{port}.log",
            ]
        base = self.local_dir / "mongo-java-server"
        return [
            base / f"data-{port}",
            base / f"mongo-java-server-{port}.pid",
            base / f"mongo-java-server-{port}.log",
        ]


class PrivateKafka(PrivateServer):
    """A private single-node KRaft Kafka (broker + controller) on two free ports."""

    which = "kafka"
    port_variables = ("STREAMSCORE_KAFKA_PORT", "STREAMSCORE_KAFKA_CONTROLLER_PORT")

    @property
    def controller_port(self) -> int:
        return self.ports[1]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The bootstrap address (named like :attr:`PrivateMongo.url` for generic code)."""
        return self.bootstrap

    def files(self) -> list[Path]:
        base, port = self.local_dir / "kafka", self.port
        return [
            base / f"data-{port}",
            base / f"server-{port}.properties",
            base / f"kafka-{port}.pid",
            base / f"kafka-{port}.log",
        ]


@pytest.fixture
def private_mongo() -> Iterator[PrivateMongo]:
    """A running private MongoDB-compatible server; stopped and deleted at teardown."""
    with PrivateMongo() as server:
        yield server


@pytest.fixture
def private_kafka() -> Iterator[PrivateKafka]:
    """A running private Kafka broker; stopped and deleted at teardown."""
    with PrivateKafka() as server:
        yield server


async def _round_trip(server: PrivateServer, write: bool) -> None:
    """Read back what the first call (``write=True``) wrote; a restart must keep it."""
    if isinstance(server, PrivateKafka):
        from settings import KafkaSettings
        from streams.topics import ensure_topics
        from tests.support.kafka_io import produce, read_until

        if write:
            kafka = KafkaSettings(bootstrap_servers=server.bootstrap, topic_partitions=1)
            await ensure_topics(kafka, ["self-check"])
            await produce(server.bootstrap, "self-check", [b"ping"], [None])
        records = await read_until(server.bootstrap, ["self-check"], 1, 30, settle_s=0)
        assert [r.value for r in records] == [b"ping"], records
    elif isinstance(server, PrivateMongo):
        from pymongo import AsyncMongoClient

        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(server.url)
        try:
            collection = client["self_check"]["docs"]
            if write:
                await collection.insert_one({"_id": 1, "v": "ping"})
            assert await collection.find_one({"_id": 1}) == {"_id": 1, "v": "ping"}
        finally:
            await client.close()


def _self_check() -> (
    None
):  # pragma: no cover - run by hand: python -m tests.support.private_servers
    for server in (PrivateMongo(), PrivateKafka()):
        with server:
            data = server.files()[0]
            assert port_open(server.port), f"{server.which} is not answering on {server.port}"
            assert data.is_dir(), f"{data} was not created"
            asyncio.run(_round_trip(server, write=True))
            print(f"{server.which}: up on {server.ports}, data in {data}, round trip ok")
            server.restart()
            assert port_open(server.port), f"{server.which} did not come back"
            asyncio.run(_round_trip(server, write=False))
            print(f"{server.which}: restarted, data kept")
        assert not port_open(server.port), f"{server.which} still answers after cleanup"
        assert not any(p.exists() for p in server.files()), "per-port files left behind"
        print(f"{server.which}: stopped and removed")
    for shared in sorted(SHARED_PORTS - {9093}):
        assert port_open(shared), f"the shared server on {shared} is not answering"
    print("shared servers untouched")


if __name__ == "__main__":
    _self_check()
