"""The PDF ticket (API.md §9.2) shows every field on the page, beside the QR code of the
ticket's current code."""

from __future__ import annotations

import warnings
from datetime import datetime
from typing import Any

import pytest
import segno

from services.ordering import pdf
from services.ordering.pdf import TicketPrint, render_ticket
from tests.support.pdf import text_runs

A5_LANDSCAPE_WIDTH_PT = 595.28
QR_LEFT_PT = 140 / 25.4 * 72  # the QR code starts 140 mm from the left


TICKET = TicketPrint(
    ticket_id=7,
    code="c0de",
    event_name="Jazz Night",
    start_date=datetime(2030, 1, 1, 20, 0),
    venue="Blue Hall",
    ticket_type="VIP",
    seat=None,
    holder="Ann Lee",
)


def test_every_field_is_on_the_page_left_of_the_qr_code() -> None:
    runs = text_runs(render_ticket(TICKET))
    shown = {
        "Jazz Night", "Date:", "2030-01-01 20:00 UTC", "Venue:", "Blue Hall", "Type:", "VIP",
        "Seat:", "General admission", "Ticket:", "#7", "Holder:", "Ann Lee",
    }  # fmt: skip
    assert shown <= set(runs)
    assert all(0 < runs[text] < QR_LEFT_PT for text in shown), runs
    assert all(x < A5_LANDSCAPE_WIDTH_PT for x in runs.values()), runs


def test_the_qr_code_encodes_the_code_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one QR code on the page is made from the ticket's code, the secret the door scans,
    and from nothing else (not its id, not a URL around it)."""
    encoded: list[Any] = []
    make = segno.make

    def recording(content: Any, *args: Any, **kwargs: Any) -> segno.QRCode:
        encoded.append(content)
        return make(content, *args, **kwargs)

    monkeypatch.setattr(pdf.segno, "make", recording)
    render_ticket(TICKET)
    assert encoded == ["c0de"]


def test_the_page_is_a5_landscape_and_rendering_it_warns_of_nothing() -> None:
    """A warning here is a plain-text line in the service's JSON log (fpdf2 warns on "A5" by
    name since 2.8.5 corrected its size)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        document = render_ticket(TICKET)
    assert b"/MediaBox [0 0 595.28 419.53]" in document
