"""The in-memory test double of the scorer's outputs, injected from outside like FastStream's
own ``TestKafkaBroker``: ``build_app(settings, broker=KafkaBroker(), outputs=broker_outputs)``
inside ``TestKafkaBroker(broker)``. Product code has no test branch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

from faststream.kafka import KafkaBroker

from settings import Settings
from streams.dead_letters import Headers


class BrokerOutputs:
    """Publishes through the (in-memory) broker, so its test client sees every output."""

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    async def send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers | None
    ) -> Awaitable[Any]:
        text = {k: (v or b"").decode("utf-8", "replace") for k, v in headers or ()}
        result = await self._broker.publish(
            value or b"", topic, key=key, headers=text or None, no_confirm=True
        )
        if asyncio.isfuture(result):
            return result
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(result)
        return done


@asynccontextmanager
async def broker_outputs(_settings: Settings, broker: KafkaBroker) -> AsyncIterator[BrokerOutputs]:
    yield BrokerOutputs(broker)
