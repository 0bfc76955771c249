"""`resellio mail` shows the catcher's newest messages, and says so when it finds none."""

from __future__ import annotations

import mailbox
from email.message import EmailMessage
from pathlib import Path

from click.testing import CliRunner

from services.cli import mail


def test_mail_reads_the_catchers_maildir_and_says_when_there_is_nothing(tmp_path: Path) -> None:
    missing = CliRunner().invoke(mail, ["--dir", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "no mail in" in missing.output
    box = mailbox.Maildir(tmp_path / "mail", create=True)
    empty = CliRunner().invoke(mail, ["--dir", str(tmp_path / "mail")])
    assert empty.exit_code == 1 and "no mail in" in empty.output
    message = EmailMessage()
    message["From"], message["To"] = "tickets@resellio.com", "ann@example.com"
    message["Subject"], message["Date"] = "Your Resellio order #7", "Sat, 28 Nov 2026 14:00 +0000"
    message.set_content("thank you for your order #7")
    box.add(message)
    shown = CliRunner().invoke(mail, ["--dir", str(tmp_path / "mail")])
    assert shown.exit_code == 0, shown.output
    assert (
        "Your Resellio order #7" in shown.output and "thank you for your order #7" in shown.output
    )
