"""deploy/rabbitmq/definitions.json against the real RabbitMQ: the broker pre-loads it, then every
service declares its topology at start; the two must agree or the declaration is refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import pytest

from services.kernel import broker
from services.kernel.settings import Settings
from services.topology import CONSUMING_SERVICES
from tests.support.infra import amqp_url

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
DELAYS = Settings().consumer_retry_delays_ms


def definitions(prefix: str, **overrides: Any) -> dict[str, Any]:
    """The committed file, with every name moved under a private prefix for this test."""
    text = DEFINITIONS.read_text().replace('"resellio.', f'"{prefix}.')
    defs: dict[str, Any] = json.loads(text)
    for queue in defs["queues"]:
        queue["arguments"].update(overrides.get(queue["name"], {}))
    return defs


async def preload(channel: aio_pika.abc.AbstractChannel, defs: dict[str, Any]) -> None:
    """What the broker does with the file at boot, done over AMQP."""
    for exchange in defs["exchanges"]:
        await channel.declare_exchange(
            exchange["name"], exchange["type"], durable=exchange["durable"]
        )
    for queue in defs["queues"]:
        await channel.declare_queue(
            queue["name"], durable=queue["durable"], arguments=queue["arguments"]
        )


async def declare_like_a_service(channel: aio_pika.abc.AbstractChannel, prefix: str) -> None:
    subscriptions = {consumer: [f"{consumer}.Anything"] for consumer in CONSUMING_SERVICES}
    await broker.declare_topology(channel, broker.Names(prefix), subscriptions, DELAYS, "quorum")


@pytest.fixture
async def connection() -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    conn = await broker.connect(amqp_url())
    yield conn
    await conn.close()


@pytest.fixture
def prefix() -> str:
    return f"it_{uuid.uuid4().hex[:10]}"


async def cleanup(conn: aio_pika.abc.AbstractRobustConnection, prefix: str) -> None:
    channel = await conn.channel()
    await broker.delete_topology(channel, broker.Names(prefix), CONSUMING_SERVICES, DELAYS)
    await channel.close()


def test_the_file_is_what_the_kernel_declares() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "deploy/rabbitmq/definitions.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_consumer_has_a_quorum_queue_with_a_delivery_limit_and_a_dead_letter_queue() -> None:
    queues = {q["name"]: q["arguments"] for q in definitions("resellio")["queues"]}
    for consumer in CONSUMING_SERVICES:
        main = queues[f"resellio.{consumer}"]
        assert main["x-queue-type"] == "quorum"
        assert main["x-delivery-limit"] == broker.BROKER_DELIVERY_LIMIT
        assert main["x-dead-letter-routing-key"] == f"resellio.{consumer}.dlq"
        assert queues[f"resellio.{consumer}.dlq"]["x-queue-type"] == "quorum"
        for delay in DELAYS:
            assert queues[f"resellio.{consumer}.retry.{delay}"]["x-message-ttl"] == delay


async def test_services_start_on_a_broker_preloaded_with_the_definitions(
    connection: aio_pika.abc.AbstractRobustConnection, prefix: str
) -> None:
    try:
        channel = await connection.channel()
        await preload(channel, definitions(prefix))
        await declare_like_a_service(channel, prefix)  # raises PRECONDITION_FAILED on a mismatch
        await channel.close()
    finally:
        await cleanup(connection, prefix)


async def test_a_definition_that_disagrees_with_the_services_is_refused(
    connection: aio_pika.abc.AbstractRobustConnection, prefix: str
) -> None:
    """The check above has teeth: one argument off and a service could not start."""
    try:
        channel = await connection.channel()
        await preload(channel, definitions(prefix, **{f"{prefix}.auth": {"x-delivery-limit": 5}}))
        with pytest.raises(broker.TopologyMismatch):
            await declare_like_a_service(channel, prefix)
    finally:
        await cleanup(connection, prefix)


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True)


def write_for_vhost(defs: dict[str, Any], vhost: str) -> Path:
    defs["vhosts"] = [{"name": vhost}]
    for item in defs["exchanges"] + defs["queues"]:
        item["vhost"] = vhost
    # Debian's rabbitmqctl runs as the rabbitmq user: the file must be readable by it.
    path = Path(tempfile.gettempdir()) / f"{vhost}-definitions.json"
    path.write_text(json.dumps(defs))
    path.chmod(0o644)
    return path


@pytest.mark.skipif(not shutil.which("rabbitmqctl"), reason="needs rabbitmqctl on this machine")
async def test_rabbitmq_imports_the_file_and_services_then_start(prefix: str) -> None:
    """The real import path (rabbitmqctl import_definitions) into a scratch virtual host."""
    vhost = prefix
    if (added := rabbitmqctl("add_vhost", vhost)).returncode != 0:
        pytest.skip(f"rabbitmqctl cannot manage this broker: {added.stderr.strip()}")
    path = write_for_vhost(definitions(prefix), vhost)
    try:
        user = amqp_url().split("//", 1)[1].split(":", 1)[0]
        assert rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*").returncode == 0
        imported = rabbitmqctl("import_definitions", str(path))
        assert imported.returncode == 0, imported.stdout + imported.stderr
        base = amqp_url().rsplit("/", 1)[0]
        conn = await broker.connect(f"{base}/{quote(vhost, safe='')}")
        try:
            await declare_like_a_service(await conn.channel(), prefix)
        finally:
            await conn.close()
    finally:
        rabbitmqctl("delete_vhost", vhost)
        path.unlink(missing_ok=True)
