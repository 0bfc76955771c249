"""Production auth refuses to start without its secrets, with one clear message (API.md §2.6)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.system import ROOT, free_port


def test_production_without_secrets_exits_with_one_message() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("INITIAL_ADMIN_EMAIL", "INITIAL_ADMIN_PASSWORD", "ADMIN_SECRET_KEY")
        and k != "JWT_PRIVATE_KEY"
    }
    env["ENVIRONMENT"] = "production"
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "serve", "auth", "--port", str(free_port())],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "error: auth refuses to start in production without INITIAL_ADMIN_EMAIL,"
        " INITIAL_ADMIN_PASSWORD, ADMIN_SECRET_KEY, JWT_PRIVATE_KEY"
        " (set them, or ENVIRONMENT=development for local defaults)"
    )
