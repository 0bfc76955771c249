"""Development mail catcher: an SMTP server that keeps every message in a Maildir."""

from __future__ import annotations

import mailbox
import time
from email.message import Message
from pathlib import Path


def serve_forever(directory: str, port: int) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Mailbox

    # mailbox.Maildir only makes tmp/new/cur when it creates the directory itself.
    for part in ("tmp", "new", "cur"):
        Path(directory, part).mkdir(parents=True, exist_ok=True)
    controller = Controller(Mailbox(directory), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


def read_messages(directory: str) -> list[Message]:
    """Every stored message, oldest first."""
    if not Path(directory, "new").exists():
        return []
    box = mailbox.Maildir(directory, create=False)
    messages = [box.get_message(key) for key in box.keys()]
    return sorted(messages, key=lambda m: m.get_date())
