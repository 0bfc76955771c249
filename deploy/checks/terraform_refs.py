"""Parse every Terraform file with python-hcl2 and check what `terraform validate` would need a
provider download for: every var.X is declared, and no secret (sensitive variable) has a default.

    python terraform_refs.py DIR
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import hcl2

VAR_USE = re.compile(r"\bvar\.([A-Za-z0-9_]+)")


def problems(directory: Path) -> list[str]:
    files = sorted(directory.glob("*.tf"))
    if not files:
        return [f"no Terraform files in {directory}"]
    declared: dict[str, dict] = {}
    found = []
    for path in files:
        try:
            with path.open() as handle:
                parsed = hcl2.load(handle)
        except Exception as exc:  # the parser's own errors are not one class
            found.append(f"{path.name}: does not parse: {exc}")
            continue
        for block in parsed.get("variable", []):
            for name, body in block.items():
                declared[name.strip('"')] = body
    if found:
        return found
    for path in files:
        for name in sorted(set(VAR_USE.findall(path.read_text()))):
            if name not in declared:
                found.append(f"{path.name}: var.{name} is not declared")
    for name, body in sorted(declared.items()):
        if body.get("sensitive") in (True, "true") and "default" in body:
            found.append(f"variable {name} is sensitive but has a default")
        if "description" not in body:
            found.append(f"variable {name} has no description")
    return found


if __name__ == "__main__":
    found = problems(Path(sys.argv[1]))
    for problem in found:
        print(f"ERROR {problem}")
    if found:
        sys.exit(1)
    print(
        f"ok -- {sys.argv[1]}: every file parses, every variable is declared, no secret has a default"
    )
