"""Where the tests' PostgreSQL and RabbitMQ are: the environment, else testcontainers (when a
Docker engine answers), else the local defaults."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache

from services.kernel.settings import DEFAULT_AMQP_URL, DEFAULT_DATABASE_URL


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@cache
def database_url() -> str:
    if url := os.environ.get("RESELLIO_DATABASE_URL"):
        return url
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:16-alpine", driver="asyncpg")
        container.start()
        return container.get_connection_url()
    return DEFAULT_DATABASE_URL


@cache
def amqp_url() -> str:
    if url := os.environ.get("RESELLIO_AMQP_URL"):
        return url
    if _docker_answers():
        from testcontainers.rabbitmq import RabbitMqContainer

        container = RabbitMqContainer("rabbitmq:3.13-alpine")
        container.start()
        params = container.get_connection_params()
        return f"amqp://guest:guest@{params.host}:{params.port}/"
    return DEFAULT_AMQP_URL
