"""Who may not use a valid token any more: banned users, revoked jtis, tokens issued before a
user's latest ban or password change (internal.md). A snapshot from auth, then auth's events."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import msgspec

from contracts import auth as events
from contracts.envelope import Event
from contracts.timeutil import as_utc
from services.kernel.tokens import Identity


class Snapshot(msgspec.Struct):
    """auth's `GET /internal/denylist`."""

    banned_user_ids: list[int] = []
    revoked_jtis: dict[str, float] = {}
    tokens_invalid_before: dict[int, float] = {}


class Decision(msgspec.Struct):
    """The part of auth's UserDetails answer to an organizer's verification that matters here."""

    user_id: int
    account_state: str


BANNED = (403, "Account banned")
REVOKED = (401, "Token has been revoked")


def _unix(moment: datetime) -> float:
    return as_utc(moment).timestamp()


class DenyList:
    def __init__(self) -> None:
        self.banned: set[int] = set()
        self.revoked: dict[str, float] = {}  # jti -> its exp (forgotten after)
        self.invalid_before: dict[int, float] = {}
        self.loaded = False
        # Every change made while a snapshot is on its way (auth's events, and what the
        # gateway applied at once): made again, in order, on top of the snapshot, which may
        # have been read before them.
        self._journal: list[Callable[[], None]] | None = None

    def refusal(self, identity: Identity) -> tuple[int, str] | None:
        """403 "Account banned" first, then 401 "Token has been revoked"; None = allowed."""
        if identity.user_id in self.banned:
            return BANNED
        if identity.jti in self.revoked:
            return REVOKED
        before = self.invalid_before.get(identity.user_id)
        if before is not None and identity.iat < before:
            return REVOKED
        return None

    def loading(self) -> None:
        """A snapshot is being fetched: keep the changes made until it is loaded."""
        self._journal = []

    def load(self, snapshot: Snapshot) -> None:
        journal, self._journal = self._journal or [], None
        self.banned = set(snapshot.banned_user_ids)
        self.revoked = dict(snapshot.revoked_jtis)
        self.invalid_before = dict(snapshot.tokens_invalid_before)
        for change in journal:
            change()
        self.loaded = True

    def not_loading(self) -> None:
        """The fetch gave up: nothing to make again."""
        self._journal = None

    def _change(self, change: Callable[[], None]) -> None:
        change()
        if self._journal is not None:
            self._journal.append(change)

    def ban(self, user_id: int, at: float) -> None:
        self._set_banned(user_id, True)
        self._invalidate_before(user_id, at)

    def revoke(self, jti: str, exp: float) -> None:
        self._change(lambda: self.revoked.__setitem__(jti, exp))

    def unban(self, user_id: int, at: float) -> None:
        """Tokens issued before the ban stay invalid (API.md §3.16): none can have been issued
        while banned, so those before the unban, which covers a rejected organizer's too."""
        self._set_banned(user_id, False)
        self._invalidate_before(user_id, at)

    def _set_banned(self, user_id: int, banned: bool) -> None:
        if banned:
            self._change(lambda: self.banned.add(user_id))
        else:
            self._change(lambda: self.banned.discard(user_id))

    def follow_decision(self, answer: bytes, at: float) -> None:
        """An organizer approved or rejected, from auth's answer (`at`: a moment before it):
        a rejection bans at once, before auth's event arrives, as a ban does; an approval that
        lifts it leaves the tokens issued before invalid, as an unban does (the event then
        tells auth's own line)."""
        try:
            decision = msgspec.json.decode(answer, type=Decision)
        except msgspec.DecodeError:
            return  # not the answer expected: auth's event will tell
        if decision.account_state == "active" and decision.user_id in self.banned:
            self.unban(decision.user_id, at)
            return
        self._follow_state(decision.user_id, decision.account_state)

    def _invalidate_before(self, user_id: int, at: float) -> None:
        def change() -> None:
            if at > self.invalid_before.get(user_id, 0.0):
                self.invalid_before[user_id] = at

        self._change(change)

    def apply(self, event: Event) -> None:
        """One auth event; applying it twice changes nothing."""
        match event:
            case events.UserBanned():
                self.ban(event.user_id, _unix(event.at))
            case events.UserUnbanned():
                # Unban restores the state before the ban, which may still be "banned"
                # (a rejected organizer); tokens issued before the ban stay invalid.
                self._follow_state(event.user_id, event.account_state)
                self._invalidate_before(event.user_id, _unix(event.at))
            case events.OrganizerRejected():
                self._follow_state(event.user_id, event.account_state or "")
            case events.OrganizerVerified():
                # An approval that lifted a rejection leaves older tokens invalid, as an unban.
                self._follow_state(event.user_id, event.account_state or "")
                if event.at is not None:
                    self._invalidate_before(event.user_id, _unix(event.at))
            case events.PasswordChanged():
                self._invalidate_before(event.user_id, _unix(event.changed_at))
            case events.AccessTokenRevoked():
                self.revoke(event.jti, _unix(event.expires_at))

    def _follow_state(self, user_id: int, account_state: str) -> None:
        if account_state:
            self._set_banned(user_id, account_state == "banned")

    def forget_expired(self, now: float | None = None) -> None:
        """A revoked jti matters only until its token expires (plus the verifier's leeway)."""
        horizon = (now or time.time()) - 60
        self.revoked = {jti: exp for jti, exp in self.revoked.items() if exp > horizon}
