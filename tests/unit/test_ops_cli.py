"""The operator command refuses what names no service before touching anything."""

from __future__ import annotations

from click.testing import CliRunner

from services.ops_cli import projections


def test_a_rebuild_of_what_is_no_service_is_a_usage_error_not_a_traceback() -> None:
    for name in ("gateway", "catlog"):
        result = CliRunner().invoke(projections, ["rebuild", name])
        assert result.exit_code == 2, result.output
        assert "is not one of 'auth', 'catalog', 'ordering', 'resale'" in result.output
