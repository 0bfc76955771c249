"""One fixture for "a running system": every service and the gateway as real processes,
on free ports, with their own database and broker names, so runs never see each other."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from services.cli import APPS, available_services
from services.devmail import read_messages
from services.kernel import broker, settings
from services.kernel.migrate import drop_database
from services.topology import subscriptions
from tests.support.infra import amqp_url, database_url

ROOT = Path(__file__).resolve().parents[2]


_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, below the kernel's ephemeral range (so no outgoing
    connection takes it before the app binds it), never the same one twice in this process."""
    while True:
        port = random.randint(20000, 32000)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


class System:
    def __init__(
        self, extra_env: dict[str, str] | None = None, instances: dict[str, int] | None = None
    ) -> None:
        # RESELLIO_RUN_PREFIX marks the systems a process starts (the benchmark's, for the test
        # that watches it), so that those of other suites on the machine are not taken for them.
        self.run_id = os.environ.get("RESELLIO_RUN_PREFIX", "") + uuid.uuid4().hex[:10]
        self.workdir = Path(tempfile.mkdtemp(prefix=f"resellio-{self.run_id}-"))
        self.mail_dir = self.workdir / "mail"
        db = make_url(database_url()).set(database=f"resellio_t_{self.run_id}")
        self.database_url = db.render_as_string(hide_password=False)
        self.ports = {name: free_port() for name in APPS}
        # Extra instances of an app listen on ports of their own; the gateway and the
        # services get every instance's URL, comma-separated (they spread requests over them).
        self.extra_ports = {
            name: [free_port() for _ in range(count - 1)]
            for name, count in (instances or {}).items()
        }
        self.mail_port = free_port()
        self.services = available_services()
        self.apps = [
            *self.services,
            *(["gateway"] if (ROOT / "gateway" / "app.py").exists() else []),
        ]
        self.env = {
            **os.environ,
            "ENVIRONMENT": "development",
            "RESELLIO_DATABASE_URL": self.database_url,
            "RESELLIO_AMQP_URL": amqp_url(),
            "RESELLIO_BROKER_PREFIX": f"t_{self.run_id}",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.mail_port),
            "CONSUMER_RETRY_DELAYS_MS": "100,200,400",
            # Several test systems share one PostgreSQL: small pools keep them under its limit.
            "RESELLIO_DB_POOL_SIZE": "6",
            # A loaded CI machine can be slow; the composed page's parts get time to answer.
            "GATEWAY_PART_TIMEOUT_S": "5",
            "PYTHONUNBUFFERED": "1",
            **{
                f"RESELLIO_{n.upper()}_URL": ",".join(
                    f"http://127.0.0.1:{port}" for port in [p, *self.extra_ports.get(n, [])]
                )
                for n, p in self.ports.items()
            },
            **(extra_env or {}),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def gateway_url(self) -> str:
        return self.url("gateway")

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.log_path(name), "ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def start(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "services.cli", "migrate"],
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        self._spawn(
            "mail", ["mailcatcher", "--dir", str(self.mail_dir), "--port", str(self.mail_port)]
        )
        if self.relay_apart:
            self.start_relay()
        for name in self.apps:
            self.start_app(name, wait=False)
        for name in self.apps:
            self.wait_healthy(name)

    @property
    def relay_apart(self) -> bool:
        """The services publish through `resellio relay`, not from their own loops."""
        return not settings.load(self.env).relay_inline

    def start_relay(self) -> None:
        self._spawn("relay", ["relay"])

    def instances(self, name: str) -> list[tuple[str, int]]:
        """(process name, port) of every instance of an app: `name`, then `name#1`, ..."""
        ports = [self.ports[name], *self.extra_ports.get(name, [])]
        return [(name if i == 0 else f"{name}#{i}", port) for i, port in enumerate(ports)]

    def start_app(self, name: str, wait: bool = True) -> None:
        for process_name, port in self.instances(name):
            self._spawn(process_name, ["serve", name, "--port", str(port)])
        if wait:
            self.wait_healthy(name)

    def wait_healthy(self, name: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        for process_name, port in self.instances(name):
            while True:
                process = self.processes[process_name]
                log = self.log_path(process_name)
                if process.poll() is not None:
                    raise RuntimeError(f"{process_name} exited:\n{log.read_text()[-4000:]}")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{process_name} not healthy:\n{log.read_text()[-4000:]}")
                time.sleep(0.1)

    def stop_app(self, name: str, sig: int = signal.SIGTERM) -> None:
        for extra, _ in self.instances(name)[1:] if name in self.ports else []:
            self.stop_app(extra, sig)
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        for name in list(self.processes):
            self.stop_app(name)
        asyncio.run(self._cleanup())

    async def _cleanup(self) -> None:
        names = broker.Names(self.env["RESELLIO_BROKER_PREFIX"])
        connection = await broker.connect(self.env["RESELLIO_AMQP_URL"])
        async with connection:
            channel = await connection.channel()
            delays = [int(d) for d in self.env["CONSUMER_RETRY_DELAYS_MS"].split(",")]
            await broker.delete_topology(channel, names, [*subscriptions(), "gateway"], delays)
        await drop_database(self.database_url)

    def mails(self, to: str | None = None) -> list[Message]:
        messages = read_messages(str(self.mail_dir))
        if to is None:
            return messages
        return [m for m in messages if to.lower() in str(m["To"]).lower()]

    async def wait_for_mail(self, to: str, count: int = 1, timeout: float = 10.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        while True:
            messages = self.mails(to)
            if len(messages) >= count or time.monotonic() > deadline:
                return messages
            await asyncio.sleep(0.05)


@contextlib.contextmanager
def running(
    extra_env: dict[str, str] | None = None, instances: dict[str, int] | None = None
) -> Iterator[System]:
    """A started system, stopped (and its database and broker names removed) afterwards."""
    system = System(extra_env=extra_env, instances=instances)
    try:
        system.start()
        yield system
    finally:
        system.stop()


async def answers_of(system: System, service: str, outcome: str) -> float:
    """A service's answers of one outcome (hit: from memory, miss: built), over every
    instance, from its /metrics."""
    total = 0.0
    pattern = re.compile(
        rf'^resellio_answers_total\{{[^}}]*outcome="{outcome}"[^}}]*\}} ([0-9.e+]+)$', re.M
    )
    async with httpx.AsyncClient(timeout=10) as client:
        for _, port in system.instances(service):
            page = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            total += sum(float(v) for v in pattern.findall(page))
    return total
