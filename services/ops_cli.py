"""Operator commands: the event log, replay, dead letters, database reset."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.timeutil import as_utc
from services.kernel import broker, deadletters
from services.kernel.db import create_engine
from services.kernel.eventlog import Filters, find_event, follow_events, list_events
from services.kernel.replay import NoConsumerQueue, plan, replay
from services.kernel.settings import SERVICES, Settings, load
from services.topology import subscriptions

T = TypeVar("T")


def _run(factory: Callable[[Settings, AsyncEngine], Awaitable[T]]) -> T:
    settings = load()

    async def main() -> T:
        engine = create_engine(settings.database_url, pool_size=2)
        try:
            return await factory(settings, engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except NoConsumerQueue as exc:
        raise click.ClickException(str(exc)) from exc


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time") from exc


def _filters(
    producer: str | None,
    types: tuple[str, ...],
    aggregate: str | None,
    correlation: str | None,
    since: str | None,
    until: str | None,
) -> Filters:
    return Filters(
        producer=producer,
        types=types,
        aggregate_id=aggregate,
        correlation_id=correlation,
        since=_time(since),
        until=_time(until),
    )


def _line(row: Any) -> str:
    state = f"#{row.sequence}" if row.sequence is not None else "unpublished"
    return (
        f"{row.occurred_at:%Y-%m-%dT%H:%M:%S.%f}Z  {row.producer:<8} {state:<12} "
        f"{row.type:<30} agg={row.aggregate_id:<10} id={row.event_id} corr={row.correlation_id}"
    )


_filter_options = [
    click.option("--producer", help="auth, catalog, ordering or resale"),
    click.option(
        "--type", "types", multiple=True, help="Event type, e.g. ordering.TicketPurchased"
    ),
    click.option("--aggregate", help="Aggregate id"),
    click.option("--correlation", help="Correlation id (the X-Request-ID that caused it)"),
    click.option("--since", help="ISO time, inclusive"),
    click.option("--until", help="ISO time, exclusive"),
]


def filter_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Adds the event-log filter options; the command receives them as one `filters`."""

    @functools.wraps(fn)
    def command(
        producer: str | None,
        types: tuple[str, ...],
        aggregate: str | None,
        correlation: str | None,
        since: str | None,
        until: str | None,
        **rest: Any,
    ) -> Any:
        return fn(filters=_filters(producer, types, aggregate, correlation, since, until), **rest)

    for option in reversed(_filter_options):
        command = option(command)
    return command


@click.group()
def events() -> None:
    """The event log (every service's published and pending events)."""


@events.command("list")
@filter_options
@click.option("--limit", type=int, default=50, show_default=True)
def events_list(
    filters: Filters,
    limit: int,
) -> None:
    """List events, oldest first (the newest LIMIT that match)."""
    rows = _run(lambda _s, engine: list_events(engine, filters, limit))
    for row in rows:
        click.echo(_line(row))
    click.echo(f"({len(rows)} events)")


@events.command("show")
@click.argument("event_id")
def events_show(event_id: str) -> None:
    """Show one event's envelope and payload."""
    found = _run(lambda _s, engine: find_event(engine, event_id))
    if found is None:
        raise click.ClickException(f"no event {event_id}")
    row, payload = found
    envelope = {
        k: str(v) if v is not None else None for k, v in row._mapping.items() if k != "payload"
    }
    click.echo(json.dumps({**envelope, "payload": payload}, indent=2, default=str))


@events.command("tail")
@filter_options
@click.option("--interval", type=float, default=0.5, show_default=True)
def events_tail(
    filters: Filters,
    interval: float,
) -> None:
    """Follow new events as they are committed (Ctrl-C to stop)."""

    async def follow(_s: Settings, engine: AsyncEngine) -> None:
        async for row in follow_events(engine, filters, interval):
            click.echo(_line(row))

    try:
        _run(follow)
    except KeyboardInterrupt:
        pass


@events.command("replay")
@click.option("--to", "consumer", required=True, help="The consumer (service) to replay into.")
@filter_options
@click.option("--dry-run", is_flag=True, help="Say how many and which, send nothing.")
@click.option("--reprocess", is_flag=True, help="Handle again events the consumer already handled.")
def events_replay(
    consumer: str,
    filters: Filters,
    dry_run: bool,
    reprocess: bool,
) -> None:
    """Replay logged events into one consumer's queue, in order; other consumers see nothing."""
    table = subscriptions()
    if consumer not in table:
        raise click.ClickException(f"unknown consumer {consumer!r}; consumers: {', '.join(table)}")

    async def go(settings: Settings, engine: AsyncEngine) -> None:
        the_plan = await plan(engine, consumer, table[consumer], filters)
        click.echo(
            f"{the_plan.total} events to replay into {consumer}"
            f"{' (reprocess)' if reprocess else ''}:"
        )
        for event_type, n in sorted(the_plan.counts.items()):
            click.echo(f"  {n:>8}  {event_type}")
        if dry_run or not the_plan.total:
            return
        connection = await broker.connect(settings.amqp_url)
        started = time.monotonic()
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            done = [0]

            def rate(_: object) -> str:
                return f"{done[0] / max(time.monotonic() - started, 1e-6):,.0f} events/s"

            with click.progressbar(
                length=the_plan.total,
                label="replaying",
                show_eta=True,
                show_pos=True,
                item_show_func=rate,
                file=click.get_text_stream("stderr"),
            ) as bar:

                def progress(n: int) -> None:
                    done[0] += n
                    bar.update(n, done[0])

                sent = await replay(
                    engine,
                    channel,
                    broker.Names(settings.broker_prefix),
                    consumer,
                    table[consumer],
                    filters,
                    reprocess,
                    progress,
                )
        elapsed = max(time.monotonic() - started, 1e-6)
        click.echo(f"replayed {sent} events in {elapsed:.2f}s ({sent / elapsed:,.0f} events/s)")

    _run(go)


@click.group()
def dlq() -> None:
    """Dead letters: messages a consumer gave up on after its retries."""


def _known_consumer(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """Only a service that consumes events has a dead-letter queue."""
    consumers = subscriptions()
    if value not in consumers:
        raise click.BadParameter(
            f"{value!r} has no dead-letter queue; consumers: {', '.join(consumers)}"
        )
    return value


def _consumer_arg(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("consumer", callback=_known_consumer)(fn)


async def _with_channel(
    settings: Settings, action: Callable[[Any, broker.Names], Awaitable[T]]
) -> T:
    connection = await broker.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        return await action(channel, broker.Names(settings.broker_prefix))


@dlq.command("list")
@_consumer_arg
def dlq_list(consumer: str) -> None:
    """List a consumer's dead letters with their failure reason and attempt count."""
    letters = _run(
        lambda s, _e: _with_channel(s, lambda ch, n: deadletters.inspect(ch, n, consumer))
    )
    for letter in letters:
        click.echo(
            f"{letter.message_id}  {letter.type:<30} attempts={letter.attempts}  "
            f"failed_at={letter.failed_at}  error={letter.error[:120]}"
        )
    click.echo(f"({len(letters)} dead letters)")


@dlq.command("show")
@_consumer_arg
@click.argument("message_id")
def dlq_show(consumer: str, message_id: str) -> None:
    """Show one dead letter: headers and envelope."""
    letters = _run(
        lambda s, _e: _with_channel(s, lambda ch, n: deadletters.inspect(ch, n, consumer))
    )
    for letter in letters:
        if letter.message_id == message_id:
            click.echo(json.dumps(_shown(letter), indent=2, default=str))
            return
    raise click.ClickException(f"no dead letter {message_id} for {consumer}")


def _shown(letter: deadletters.DeadLetter) -> dict[str, Any]:
    """The letter's headers and envelope; a body that is not JSON (the usual poison message)
    as its text instead, undecodable bytes replaced."""
    try:
        return {"headers": letter.headers, "envelope": json.loads(letter.body)}
    except ValueError:  # not JSON, or not UTF-8
        return {"headers": letter.headers, "body": letter.body.decode("utf-8", "replace")}


def _settle_command(requeue: bool) -> Callable[[str, tuple[str, ...], bool], None]:
    def command(consumer: str, message_ids: tuple[str, ...], all_: bool) -> None:
        if not message_ids and not all_:
            raise click.UsageError("name MESSAGE_IDs or pass --all")
        wanted = set(message_ids)
        found: set[str] = set()

        def chosen(letter: deadletters.DeadLetter) -> bool:
            if letter.message_id in wanted:
                found.add(letter.message_id)
                return True
            return all_

        try:
            n = _run(
                lambda s, _e: _with_channel(
                    s, lambda ch, names: deadletters.settle(ch, names, consumer, chosen, requeue)
                )
            )
        except broker.Unroutable as exc:
            raise click.ClickException(
                f"{exc}: start {consumer} so that it declares its queue, then requeue again"
                " (the dead letters are kept)"
            ) from None
        click.echo(f"{'requeued' if requeue else 'dropped'} {n} dead letters")
        if wanted - found:  # as `show` does: a mistyped id is an error, not a silent no-op
            missing = ", ".join(sorted(wanted - found))
            raise click.ClickException(f"no dead letter {missing} for {consumer}")

    return command


for _name, _requeue, _help in (
    ("requeue", True, "Send dead letters back to the consumer (attempts reset)."),
    ("drop", False, "Delete dead letters for good."),
):
    dlq.command(_name, help=_help)(
        _consumer_arg(
            click.argument("message_ids", nargs=-1)(
                click.option("--all", "all_", is_flag=True)(_settle_command(_requeue))
            )
        )
    )


@click.group()
def projections() -> None:
    """Projections: each service's local copies of other services' data."""


@projections.command("rebuild")
@click.argument("service", type=click.Choice(SERVICES))
@click.option("--timeout", type=float, default=600.0, show_default=True)
def projections_rebuild(service: str, timeout: float) -> None:
    """Rebuild SERVICE's projections in place from the event logs, compare with before.

    Run it while the service's consumer is running (it applies the replayed events)."""
    import importlib

    from services.kernel.projections import STALL_S, rebuild

    projection = getattr(
        importlib.import_module(f"services.{service}.consumers"), "PROJECTION", None
    )
    if projection is None:
        raise click.ClickException(f"{service} declares no PROJECTION")

    async def go(settings: Settings, engine: AsyncEngine) -> bool:
        connection = await broker.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            last = [0]

            def progress(done: int, total: int) -> None:
                if done != last[0]:
                    click.echo(f"\r  applied {done}/{total}", nl=False, err=True)
                    last[0] = done

            report = await rebuild(
                engine,
                channel,
                broker.Names(settings.broker_prefix),
                service,
                projection,
                progress,
                timeout,
            )
        click.echo("", err=True)
        click.echo(
            f"replayed {report.replayed} events in {report.replay_seconds:.2f}s "
            f"({report.rate:,.0f} events/s); the rebuild took {report.seconds:.2f}s in all"
        )
        for table, state in report.after.items():
            was = report.before[table]
            same = "same" if state == was else "DIFFERENT"
            click.echo(f"  {table:<24} rows {was.rows:>8} -> {state.rows:<8} checksum {same}")
        if not report.complete:
            click.echo(
                f"rebuild INCOMPLETE: {report.applied} of {report.expected} events applied "
                f"when it stopped waiting (at --timeout {timeout:g}s, or nothing applied for "
                f"{STALL_S:g}s with the queue empty: see `resellio dlq list`); rows no event "
                "wrote were kept. The rest are applied as they arrive; run the rebuild again to "
                "finish it"
            )
        else:
            click.echo(
                "projection matches what was there before"
                if report.matches
                else "projection DIFFERS from what was there before"
            )
        return report.matches

    if not _run(go):
        raise SystemExit(1)
