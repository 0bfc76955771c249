"""Every app builds without a deprecation warning. Litestar 2.25 deprecates handler parameters
inferred from the signature, and 3.0 removes them, so each path or query parameter a handler
takes is declared (`FromPath`, `FromQuery`)."""

from __future__ import annotations

import warnings

import pytest
from uvicorn.importer import import_from_string

from services.cli import APPS


@pytest.mark.parametrize("name", sorted(APPS))
def test_the_app_builds_without_a_deprecated_declaration(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "development")  # auth's development keys
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        import_from_string(APPS[name])()
