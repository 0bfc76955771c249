"""The operator's console against the running system: event log, replay, projection rebuild."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid

import aio_pika
import httpx
from sqlalchemy import text

from services.kernel import broker
from services.kernel.db import create_engine
from services.kernel.eventlog import FIND_SQL
from tests.support.actors import admin_token, verified_organizer
from tests.support.shop import eventually, location
from tests.support.system import ROOT, System, free_port


def resellio(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=system.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_events_are_listed_by_correlation_id_and_shown(
    system: System, api: httpx.AsyncClient
) -> None:
    request_id = f"ops-{uuid.uuid4().hex[:12]}"
    email = f"ops-{uuid.uuid4().hex[:8]}@example.com"
    response = await api.post(
        "/api/auth/register/customer",
        json={
            "email": email,
            "login": email,
            "password": "Secret123!",
            "first_name": "O",
            "last_name": "P",
        },
        headers={"X-Request-ID": request_id},
    )
    assert response.status_code == 201
    listed = await asyncio.to_thread(
        resellio, system, "events", "list", "--correlation", request_id
    )
    assert listed.returncode == 0, listed.stderr
    lines = [line for line in listed.stdout.splitlines() if "auth.UserRegistered" in line]
    assert len(lines) == 1 and "(1 events)" in listed.stdout
    event_id = lines[0].split("id=")[1].split()[0]
    shown = await asyncio.to_thread(resellio, system, "events", "show", event_id)
    assert (
        shown.returncode == 0
        and email in shown.stdout
        and '"type": "auth.UserRegistered"' in shown.stdout
    )
    for unknown in (str(uuid.uuid4()), "not-an-id"):
        missing = await asyncio.to_thread(resellio, system, "events", "show", unknown)
        assert missing.returncode == 1 and f"no event {unknown}" in missing.stderr
        assert "Traceback" not in missing.stderr


async def test_an_event_is_found_by_its_id_through_the_logs_index(system: System) -> None:
    """An operator's lookup does not read the whole log (which only grows)."""
    engine = create_engine(system.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SET enable_seqscan = off"))  # as on a log of millions
            plan = (
                await conn.execute(
                    text("EXPLAIN " + FIND_SQL.format(producer="ordering")), {"id": uuid.uuid4()}
                )
            ).scalars()
            shown = "\n".join(plan)
            assert "outbox_event_id_key" in shown and "Index Cond: (event_id = " in shown
    finally:
        await engine.dispose()


async def test_rebuilt_catalog_projection_equals_the_one_it_replaced(
    system: System, api: httpx.AsyncClient
) -> None:
    admin = await admin_token(api)
    await verified_organizer(api, admin)  # at least one organizer row to rebuild
    result = await asyncio.to_thread(resellio, system, "projections", "rebuild", "catalog")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "projection matches what was there before" in result.stdout
    assert "checksum same" in result.stdout
    rows = next(
        line for line in result.stdout.splitlines() if line.strip().startswith("organizers")
    )
    before, after = int(rows.split()[2]), int(rows.split()[4])
    assert before == after >= 1


async def test_a_rebuild_repairs_a_damaged_projection_in_place(
    system: System, api: httpx.AsyncClient
) -> None:
    """An organizer's row changed by hand and a row no event made: the rebuild writes the first
    back from auth's events and deletes the second, says the projection differs (exit 1), and a
    second rebuild finds nothing to repair."""
    admin = await admin_token(api)
    organizer = await verified_organizer(api, admin)
    engine = create_engine(system.database_url, pool_size=1)
    row = "SELECT verified, account_state FROM catalog.organizers WHERE organizer_id = :o"
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE catalog.organizers SET verified = false, account_state = 'banned' "
                    "WHERE organizer_id = :o"
                ),
                {"o": organizer.role_id},
            )
            await conn.execute(
                text(
                    "INSERT INTO catalog.organizers (organizer_id, user_id, account_state) "
                    "VALUES (987654, 987654, 'active')"
                )
            )
        repaired = await asyncio.to_thread(resellio, system, "projections", "rebuild", "catalog")
        assert repaired.returncode == 1, repaired.stdout + repaired.stderr
        assert "checksum DIFFERENT" in repaired.stdout
        async with engine.connect() as conn:
            assert (await conn.execute(text(row), {"o": organizer.role_id})).one() == (
                True,
                "active",
            )
            assert (await conn.execute(text(row), {"o": 987654})).first() is None
    finally:
        await engine.dispose()
    again = await asyncio.to_thread(resellio, system, "projections", "rebuild", "catalog")
    assert again.returncode == 0 and "checksum same" in again.stdout, again.stdout


async def test_replay_dry_run_says_how_many_and_which(
    system: System, api: httpx.AsyncClient
) -> None:
    result = await asyncio.to_thread(
        resellio,
        system,
        "events",
        "replay",
        "--to",
        "ordering",
        "--type",
        "auth.UserRegistered",
        "--dry-run",
    )
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.endswith("events to replay into ordering:") and int(first.split()[0]) >= 1
    assert "auth.UserRegistered" in result.stdout
    unknown = await asyncio.to_thread(
        resellio, system, "events", "replay", "--to", "nobody", "--dry-run"
    )
    assert unknown.returncode != 0 and "unknown consumer" in unknown.stderr


async def test_dead_letters_are_asked_of_a_consumer_only(system: System) -> None:
    for name in ("auth", "nobody"):  # auth consumes nothing: no dead-letter queue
        refused = await asyncio.to_thread(resellio, system, "dlq", "list", name)
        assert refused.returncode == 2 and "has no dead-letter queue" in refused.stderr
        assert "Traceback" not in refused.stderr
    listed = await asyncio.to_thread(resellio, system, "dlq", "list", "ordering")
    assert listed.returncode == 0 and "(0 dead letters)" in listed.stdout, listed.stderr


async def test_a_poison_letter_that_is_not_json_is_shown_and_dropped_by_its_id(
    system: System,
) -> None:
    """The usual poison message is not JSON at all: `dlq show` shows its text (it raised
    JSONDecodeError), and `dlq drop` of an id that names no letter is an error, not a silent
    "dropped 0", while the letter named with it goes."""
    letter_id = str(uuid.uuid4())
    connection = await aio_pika.connect(system.env["RESELLIO_AMQP_URL"])
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(b"not json \xff at all", message_id=letter_id),
            routing_key=broker.Names(system.env["RESELLIO_BROKER_PREFIX"]).queue("ordering"),
        )

    async def dead_lettered() -> bool:
        listed = await asyncio.to_thread(resellio, system, "dlq", "list", "ordering")
        return letter_id in listed.stdout

    assert await eventually(dead_lettered, timeout=30)
    shown = await asyncio.to_thread(resellio, system, "dlq", "show", "ordering", letter_id)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["body"] == "not json \ufffd at all"
    dropped = await asyncio.to_thread(
        resellio, system, "dlq", "drop", "ordering", letter_id, "no-such-letter"
    )
    assert dropped.returncode == 1 and "no dead letter no-such-letter" in dropped.stderr
    assert "dropped 1 dead letters" in dropped.stdout
    listed = await asyncio.to_thread(resellio, system, "dlq", "list", "ordering")
    assert "(0 dead letters)" in listed.stdout, listed.stdout


async def _register(api: httpx.AsyncClient, request_id: str) -> None:
    email = f"{request_id}@example.com"
    fields = {"login": email, "password": "Secret123!", "first_name": "T", "last_name": "L"}
    registered = await api.post(
        "/api/auth/register/customer",
        json={"email": email, **fields},
        headers={"X-Request-ID": request_id},
    )
    assert registered.status_code == 201


async def test_tail_shows_the_last_ten_then_only_what_is_new(
    system: System, api: httpx.AsyncClient
) -> None:
    # The last ten all auth's: the other logs (catalog's has a location at least) must not
    # follow in full on the next poll.
    await location(api, await admin_token(api))
    for i in range(11):
        await _register(api, f"before-{i}-{uuid.uuid4().hex[:8]}")
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "services.cli", "events", "tail", "--interval", "0.2"),
        env=system.env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    first: list[str] = []
    try:
        # Started, and the last ten shown (however long a busy machine takes to start it):
        # only then the new registration.
        while len(first) < 10:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
            assert line, "events tail ended before showing the last ten"
            first.append(line.decode().rstrip("\n"))
        request_id = f"tail-{uuid.uuid4().hex[:12]}"
        await _register(api, request_id)
        await asyncio.sleep(2)
    finally:
        proc.terminate()
        out, err = await proc.communicate()
    lines = first + out.decode().splitlines()
    assert [line for line in lines if "corr=before-" in line] == lines[:10], lines
    # Then what is new only, not whole logs: the registration's own events.
    assert lines[10:] and all(request_id in line for line in lines[10:]), (lines, err.decode())


async def test_a_process_starts_with_only_the_database_url_it_is_deployed_with(
    system: System,
) -> None:
    """As Compose, Kubernetes and ECS run them: a service with its own
    RESELLIO_<SERVICE>_DATABASE_URL and no usable RESELLIO_DATABASE_URL, the gateway with no
    database at all. Each starts and answers; the start-up check used to try
    RESELLIO_DATABASE_URL's server (127.0.0.1 by default) and exit."""
    deployed = {**system.env, "RESELLIO_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:9/x"}
    deployed["RESELLIO_CATALOG_DATABASE_URL"] = system.database_url
    for name in ("catalog", "gateway"):
        assert await _serves(name, deployed), name


async def _serves(name: str, env: dict[str, str]) -> bool:
    """Whether `resellio serve <name>` with `env` comes to answer /health (stopped after)."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "serve", name, "--port", str(port),
        env=env, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip

    async def answers() -> bool:
        assert process.returncode is None, "exited"
        try:
            async with httpx.AsyncClient(timeout=1) as http:
                return (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        return bool(await eventually(answers, timeout=30))
    except AssertionError:
        assert process.stderr is not None
        raise AssertionError((await process.stderr.read()).decode()[-2000:]) from None
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
