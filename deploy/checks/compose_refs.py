"""What the Compose schema cannot see: references inside compose.yaml.

Every depends_on names a defined service, every mounted file exists, and every variable that
compose.yaml requires (${VAR:?...}) is in the env template, so `cp deploy/env.example .env`
names every secret a user must fill in.

    python compose_refs.py COMPOSE_FILE ENV_TEMPLATE
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

REQUIRED = re.compile(r"\$\{([A-Z0-9_]+):\?")


def problems(compose_path: Path, template_path: Path) -> list[str]:
    text = compose_path.read_text()
    compose = yaml.safe_load(text)
    services = compose.get("services", {})
    found = []
    for name, service in services.items():
        for dependency in service.get("depends_on", {}) or {}:
            if dependency not in services:
                found.append(f"{name}: depends_on an undefined service {dependency!r}")
        for volume in service.get("volumes", []) or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
            if source and source.startswith("."):
                if not (compose_path.parent / source).exists():
                    found.append(f"{name}: mounts {source}, which does not exist")
    template = {
        line.split("=", 1)[0].strip()
        for line in template_path.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    for variable in sorted(set(REQUIRED.findall(text)) - template):
        found.append(
            f"{variable} is required by {compose_path.name} but missing from {template_path.name}"
        )
    return found


if __name__ == "__main__":
    found = problems(Path(sys.argv[1]), Path(sys.argv[2]))
    for problem in found:
        print(f"ERROR {problem}")
    if found:
        sys.exit(1)
    print(f"ok -- {sys.argv[1]}: references resolve, {sys.argv[2]} lists every required variable")
