"""The PDF ticket (API.md §9.2): event, date, venue, type, seat, ticket id, holder, and a QR code
of the ticket's current code, which is what the door scans."""

from __future__ import annotations

import io
from datetime import datetime

import msgspec
import segno
from fpdf import FPDF, XPos, YPos


class TicketPrint(msgspec.Struct, frozen=True):
    ticket_id: int
    code: str
    event_name: str
    start_date: datetime
    venue: str
    ticket_type: str
    seat: str | None
    holder: str


def _latin1(text: str) -> str:
    # The core PDF fonts are Latin-1; anything else is shown as '?' rather than failing.
    return text.encode("latin-1", "replace").decode("latin-1")


def render_ticket(ticket: TicketPrint) -> bytes:
    # A5 in millimetres: fpdf2 warns on the name (its size was corrected in 2.8.5), in the log
    # of every first download.
    pdf = FPDF(format=(148, 210), orientation="landscape", unit="mm")
    pdf.set_title(f"Ticket {ticket.ticket_id}")
    pdf.set_creator("Resellio")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 20)
    # Each line starts again at the left margin (a multi_cell leaves x at its right edge).
    below = {"new_x": XPos.LMARGIN, "new_y": YPos.NEXT}
    pdf.multi_cell(120, 10, _latin1(ticket.event_name), **below)
    pdf.set_font("Helvetica", size=12)
    for label, value in (
        ("Date", ticket.start_date.strftime("%Y-%m-%d %H:%M UTC")),
        ("Venue", ticket.venue),
        ("Type", ticket.ticket_type),
        ("Seat", ticket.seat or "General admission"),
        ("Ticket", f"#{ticket.ticket_id}"),
        ("Holder", ticket.holder),
    ):
        pdf.cell(25, 8, f"{label}:")
        pdf.multi_cell(95, 8, _latin1(value), **below)
    qr = io.BytesIO()
    segno.make(ticket.code, error="m").save(qr, kind="png", scale=8, border=2)
    qr.seek(0)
    pdf.image(qr, x=140, y=20, w=60, h=60)
    pdf.set_xy(140, 82)
    pdf.set_font("Helvetica", size=7)
    pdf.multi_cell(60, 4, "Scan at the entrance. A resold ticket gets a new code.", align="C")
    return bytes(pdf.output())
