"""`resellio`: the operator's console (migrations, running, seeding, events, dead letters)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from services.kernel import settings as settings_mod
from services.kernel.settings import DEFAULT_PORTS, SERVICES, ConfigError

APPS = {
    "auth": "services.auth.app:create_app",
    "catalog": "services.catalog.app:create_app",
    "ordering": "services.ordering.app:create_app",
    "resale": "services.resale.app:create_app",
    "gateway": "gateway.app:create_app",
}


def available_services() -> list[str]:
    root = Path(__file__).resolve().parent
    return [s for s in SERVICES if (root / s / "app.py").exists()]


def _fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(1)


async def _preflight(cfg: settings_mod.Settings, serving: str | None = None) -> None:
    """One clear message per missing dependency, instead of a traceback. `serving`: the one
    process about to run, which needs only its own database (a service's URL, as deployed
    with RESELLIO_<SERVICE>_DATABASE_URL and no RESELLIO_DATABASE_URL) or none (the
    gateway); otherwise the server of RESELLIO_DATABASE_URL, through its `postgres` database
    (the one to create may not exist yet)."""
    import asyncpg
    from sqlalchemy.engine import make_url

    from services.kernel.broker import BrokerUnavailable, connect

    if serving != "gateway":
        url = make_url(cfg.database_url if serving is None else cfg.database_url_for(serving))
        try:
            conn = await asyncpg.connect(
                host=url.host,
                port=url.port or 5432,
                user=url.username,
                password=url.password,
                database="postgres" if serving is None else url.database,
                timeout=5,
            )
            await conn.close()
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            variable = "RESELLIO_DATABASE_URL"
            if serving is not None and serving in cfg.service_database_urls:
                variable = f"RESELLIO_{serving.upper()}_DATABASE_URL"
            _fail(
                f"PostgreSQL is not reachable at {url.host}:{url.port or 5432} ({exc}).\n"
                "  Start it (e.g. `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`)"
                f" or set {variable}."
            )
    try:
        connection = await connect(cfg.amqp_url)
        await connection.close()
    except BrokerUnavailable as exc:
        _fail(
            f"RabbitMQ is not reachable at {cfg.amqp_url.rsplit('@', 1)[-1]} ({exc}).\n"
            "  Start it (e.g. `rabbitmq-server -detached`) or set RESELLIO_AMQP_URL."
        )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (as the services run under uvicorn)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _settings() -> settings_mod.Settings:
    try:
        return settings_mod.load()
    except ConfigError as exc:
        _fail(str(exc))
        raise


@click.group()
def main() -> None:
    """Resellio operator console."""


@main.command()
@click.option("--service", "only", multiple=True, help="Only these services (default: all).")
def migrate(only: tuple[str, ...]) -> None:
    """Create the database if missing and migrate every service's schema."""
    from services.kernel.migrate import ensure_database, upgrade

    cfg = _settings()
    asyncio.run(_preflight(cfg))
    if asyncio.run(ensure_database(cfg.database_url)):
        click.echo("created database")
    for service in only or available_services():
        upgrade(service, cfg.database_url)
        click.echo(f"migrated {service}")


@main.command()
@click.argument("service", type=click.Choice(list(SERVICES)))
@click.option("-m", "--message", required=True)
def makemigration(service: str, message: str) -> None:
    """Autogenerate a migration for SERVICE from its models (uses a scratch database)."""
    from alembic import command
    from sqlalchemy.engine import make_url

    from services.kernel.migrate import alembic_config, drop_database, ensure_database, upgrade

    cfg = _settings()
    scratch = make_url(cfg.database_url).set(database=f"resellio_autogen_{service}")
    url = scratch.render_as_string(hide_password=False)
    asyncio.run(drop_database(url))
    asyncio.run(ensure_database(url))
    try:
        upgrade(service, url)
        command.revision(alembic_config(service, url), message=message, autogenerate=True)
    finally:
        asyncio.run(drop_database(url))


@main.command()
@click.argument("name", type=click.Choice(list(APPS)))
@click.option("--host", default=os.environ.get("RESELLIO_HOST", "127.0.0.1"), show_default=True)
@click.option("--port", type=int, default=None)
def serve(name: str, host: str, port: int | None) -> None:
    """Run one service (or the gateway) in the foreground."""
    import uvicorn
    from uvicorn.importer import import_from_string

    from services.kernel.app import served
    from services.kernel.server import JsonErrorsProtocol

    asyncio.run(_preflight(_settings(), serving=name))
    port = port or int(os.environ.get(f"RESELLIO_{name.upper()}_PORT", DEFAULT_PORTS[name]))

    def built() -> Any:
        # Built by uvicorn, in its event loop: built before it, the event pipeline's p99 at
        # 500 events/s measured 443-643 ms against 78 ms (`make bench --scenarios pipeline`).
        app = served(import_from_string(APPS[name])())
        _settle_collector()
        return app

    uvicorn.run(
        built,
        factory=True,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http=JsonErrorsProtocol,  # httptools, its own 400 in JSON
        lifespan="on",
        timeout_graceful_shutdown=5,
        backlog=2048,
        # The client is the connecting address: X-Forwarded-For is the gateway's to believe,
        # from TRUSTED_PROXIES only (uvicorn's default believed it from any loopback peer).
        proxy_headers=False,
        server_header=False,  # which server answers is nobody's business
        ws="none",  # no WebSocket route: an Upgrade request is an HTTP request like any other
    )


# The cyclic collector's thresholds in a served process (Python's own: 700, 10, 10). A request
# allocates thousands of containers, nearly all freed by reference counting when it ends; at 700
# the youngest generation is walked each time 700 more are alive. Measured in a drop (six
# drops each, interleaved): ordering 2.37 ms of CPU per ticket against 2.51, 221 checkouts/s
# against 209. What cycles do form (an exception's traceback) wait longer to be freed.
COLLECTOR_THRESHOLDS = (20_000, 50, 100)


def _settle_collector() -> None:
    """What is alive once the app is built (modules, routes, settings) lives as long as the
    process: the cyclic collector stops walking it (gc.freeze), so a full collection walks
    what requests made, not every module and route; and it runs less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


@main.command()
@click.argument("only", nargs=-1, type=click.Choice(list(SERVICES)))
def relay(only: tuple[str, ...]) -> None:
    """Publish the outboxes of these services (default: all) from a process of their own; run
    the services with RESELLIO_RELAY=external so that they do not publish themselves."""
    from services.kernel.logs import configure
    from services.kernel.relay import run_apart

    cfg = _settings()
    configure("relay", cfg.log_level)
    asyncio.run(_preflight(cfg))
    services = list(only) or available_services()
    queue_type = os.environ.get("RESELLIO_QUEUE_TYPE", "quorum")
    _settle_collector()
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(run_apart(cfg, services, queue_type))
    except KeyboardInterrupt:
        pass


@main.command()
@click.option("--dir", "directory", default=".run/mail", show_default=True)
@click.option("--port", type=int, default=1025, show_default=True)
def mailcatcher(directory: str, port: int) -> None:
    """A development SMTP server that stores every message in a Maildir."""
    from services.devmail import serve_forever

    serve_forever(directory, port)


@main.command()
@click.option("--dir", "directory", default=".run/mail", show_default=True)
@click.option("--last", type=int, default=5, show_default=True)
def mail(directory: str, last: int) -> None:
    """Show the newest messages the development mail catcher received."""
    from services.devmail import read_messages, readable

    messages = read_messages(directory)
    if not messages:  # the catcher's Maildir is missing or empty: say so, not nothing
        raise click.ClickException(
            f"no mail in {directory} (run from the repository, or name the catcher's --dir)"
        )
    for message in messages[-last:]:
        click.echo(readable(message))


@main.command()
def seed() -> None:
    """Load demo data through the auth and catalog APIs (idempotent); prints the credentials."""
    import httpx

    from services.seed import SeedError
    from services.seed import main as load_demo_data

    try:
        load_demo_data(_settings())
    except (SeedError, httpx.HTTPError) as exc:
        _fail(f"seeding failed: {exc}")


def _start_services(
    env: dict[str, str], services: list[str], instances: int
) -> list[tuple[str, subprocess.Popen[bytes]]]:
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    for service in services:
        port = int(env.get(f"RESELLIO_{service.upper()}_PORT", DEFAULT_PORTS[service]))
        for i in range(instances):
            # Extra instances listen on port + 100*i; the gateway spreads requests over them.
            cmd = [
                sys.executable,
                "-m",
                "services.cli",
                "serve",
                service,
                "--port",
                str(port + 100 * i),
            ]
            processes.append((f"{service}#{i}", subprocess.Popen(cmd, env=env)))
    return processes


def _seed(env: dict[str, str]) -> None:
    if "seed" in main.commands:
        subprocess.run([sys.executable, "-m", "services.cli", "seed"], check=False, env=env)


@main.command()
@click.option(
    "--instances",
    type=int,
    default=int(os.environ.get("RESELLIO_INSTANCES", "1")),
    show_default=True,
    help="Instances of each service behind the gateway.",
)
@click.option("--no-seed", is_flag=True, help="Skip loading demo data.")
def run(instances: int, no_seed: bool) -> None:
    """Migrate, seed and run every service and the gateway in the foreground."""
    cfg = _settings()
    asyncio.run(_preflight(cfg))
    env = dict(os.environ)
    Path(".run").mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-m", "services.cli", "migrate"], check=True, env=env)
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    if env.get("RESELLIO_MAILCATCHER", "1") == "1":
        mail_port = env.get("SMTP_PORT", "1025")
        cmd = [sys.executable, "-m", "services.cli", "mailcatcher", "--port", mail_port]
        processes.append(("mail", subprocess.Popen(cmd, env=env)))
    services = available_services()
    processes += _start_services(env, services, instances)
    if instances > 1:
        for service in services:
            port = int(env.get(f"RESELLIO_{service.upper()}_PORT", DEFAULT_PORTS[service]))
            env[f"RESELLIO_{service.upper()}_URL"] = ",".join(
                f"http://127.0.0.1:{port + 100 * i}" for i in range(instances)
            )
    _wait_healthy([(service, cfg.url_of(service)) for service in services], processes)
    if not no_seed:
        _seed(env)
    processes.append(
        (
            "gateway",
            subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "gateway"], env=env),
        )
    )
    gateway = f"http://127.0.0.1:{env.get('RESELLIO_GATEWAY_PORT', DEFAULT_PORTS['gateway'])}"
    _wait_healthy([("gateway", gateway)], processes)  # "up" only once it answers
    click.secho(f"Resellio is up: gateway on {gateway} (Ctrl-C stops everything)", fg="green")
    _supervise(processes)


@main.group()
def db() -> None:
    """Database administration (reset; per-service roles)."""


@db.command("reset")
@click.option("--yes", is_flag=True, help="Really wipe every schema.")
def reset(yes: bool) -> None:
    """Wipe every service schema and the broker queues, migrate, and load the demo data again.

    Refused in production. Stop the running system first (Ctrl-C on `make run`)."""
    import httpx

    from services.kernel.reset import wipe

    cfg = _settings()
    if not cfg.development:
        _fail("refusing to reset: ENVIRONMENT is not 'development'")
    if not yes:
        _fail("this deletes every user, event, order and ticket; pass --yes to confirm")
    asyncio.run(_preflight(cfg))
    for service in available_services():
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{cfg.url_of(service)}/health", timeout=1).status_code == 200:
                _fail(f"{service} is running at {cfg.url_of(service)}; stop the system first")
    asyncio.run(wipe(cfg))
    click.echo("wiped every schema and purged the broker queues")
    env = dict(os.environ)
    subprocess.run([sys.executable, "-m", "services.cli", "migrate"], check=True, env=env)
    services = available_services()
    processes = _start_services(env, services, 1)
    try:
        _wait_healthy([(service, cfg.url_of(service)) for service in services], processes)
        _seed(env)
    finally:
        _stop(processes)
    click.secho("reset done: demo data loaded", fg="green")


@db.command("roles")
@click.option("--service", "only", multiple=True, help="Only these services (default: all).")
def db_roles(only: tuple[str, ...]) -> None:
    """Create or update each service's own role (from RESELLIO_<SERVICE>_DATABASE_URL),
    with rights on its own schema only. Run as the migration owner; safe to repeat."""
    from services.kernel.roles import RoleError, ensure_roles, roles_from_settings

    cfg = _settings()
    try:
        roles = roles_from_settings(cfg, only or SERVICES)
        if not roles:
            click.echo("no RESELLIO_<SERVICE>_DATABASE_URL is set: every service uses the owner")
            return
        for line in asyncio.run(ensure_roles(cfg.database_url, roles)):
            click.echo(line)
    except RoleError as exc:
        _fail(str(exc))


def _wait_healthy(
    apps: list[tuple[str, str]],
    processes: list[tuple[str, subprocess.Popen[bytes]]],
) -> None:
    """Until each (name, url) answers its /health; stops everything if one cannot start."""
    import httpx

    deadline = time.monotonic() + 60
    for service, url in apps:
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for _, p in processes):
                _stop(processes)
                _fail(f"{service} did not start; see its log above")
            time.sleep(0.2)


def _stop(processes: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    for _, process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for _, process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()


def _supervise(processes: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    while not stopping:
        for name, process in processes:
            if process.poll() is not None:
                click.secho(
                    f"{name} exited with {process.returncode}; stopping everything", fg="red"
                )
                stopping, code = True, 1
                break
        time.sleep(0.3)
    _stop(processes)
    sys.exit(code)


def _register_operator_commands() -> None:
    from services.ops_cli import dlq, events, projections

    main.add_command(events)
    main.add_command(dlq)
    main.add_command(projections)


_register_operator_commands()

if __name__ == "__main__":
    main()
