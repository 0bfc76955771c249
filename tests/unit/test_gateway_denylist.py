"""The deny-list the gateway applies to valid tokens (internal.md)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from contracts import auth as events
from gateway.denylist import BANNED, REVOKED, DenyList, Snapshot
from services.kernel.relay import consumed_types
from services.kernel.tokens import Identity
from services.topology import GATEWAY_FOLLOWS

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def token(user_id: int = 7, iat: float | None = None, jti: str = "j1") -> Identity:
    issued = T0.timestamp() if iat is None else iat
    return Identity("a@x.io", "customer", user_id, 1, "Ada", jti, issued, int(issued) + 1800)


def test_the_snapshot_decodes_from_auths_format() -> None:
    raw = b'{"banned_user_ids":[3],"revoked_jtis":{"j":1893456000},"tokens_invalid_before":{"5":1893456000.25}}'
    snapshot = msgspec.json.decode(raw, type=Snapshot)
    denylist = DenyList()
    denylist.load(snapshot)
    assert denylist.banned == {3}
    assert denylist.revoked == {"j": 1893456000}
    assert denylist.invalid_before == {5: 1893456000.25}


def test_a_ban_is_checked_before_revocation() -> None:
    denylist = DenyList()
    denylist.apply(
        events.UserBanned(user_id=7, role="customer", role_id=1, at=T0, account_state="banned")
    )
    assert denylist.refusal(token(iat=T0.timestamp() - 5)) == BANNED
    assert denylist.refusal(token(user_id=8)) is None


def test_unban_keeps_tokens_from_before_the_ban_invalid() -> None:
    denylist = DenyList()
    denylist.apply(
        events.UserBanned(user_id=7, role="customer", role_id=1, at=T0, account_state="banned")
    )
    denylist.apply(
        events.UserUnbanned(user_id=7, role="customer", role_id=1, at=T0, account_state="active")
    )
    assert denylist.refusal(token(iat=T0.timestamp() - 0.001)) == REVOKED
    assert denylist.refusal(token(iat=T0.timestamp() + 0.001)) is None


def test_a_password_change_revokes_older_tokens_to_the_millisecond() -> None:
    denylist = DenyList()
    denylist.apply(events.PasswordChanged(user_id=7, changed_at=T0))
    assert denylist.refusal(token(iat=T0.timestamp() - 0.001)) == REVOKED
    assert denylist.refusal(token(iat=T0.timestamp())) is None
    # An older change arriving late never moves the line back.
    denylist.apply(events.PasswordChanged(user_id=7, changed_at=datetime(2029, 1, 1, tzinfo=UTC)))
    assert denylist.refusal(token(iat=T0.timestamp() - 0.001)) == REVOKED


def test_a_logged_out_jti_is_revoked_until_it_expires() -> None:
    denylist = DenyList()
    denylist.apply(events.AccessTokenRevoked(jti="j1", user_id=7, expires_at=T0))
    assert denylist.refusal(token(jti="j1")) == REVOKED
    assert denylist.refusal(token(jti="j2")) is None
    denylist.forget_expired(now=T0.timestamp() + 3600)
    assert "j1" not in denylist.revoked


def test_organizer_decisions_follow_the_account_state() -> None:
    denylist = DenyList()
    denylist.apply(
        events.OrganizerRejected(user_id=9, organizer_id=2, account_state="banned", at=T0)
    )
    assert denylist.refusal(token(user_id=9)) == BANNED
    denylist.apply(events.OrganizerVerified(user_id=9, organizer_id=2, account_state="active"))
    assert denylist.refusal(token(user_id=9)) is None
    # A ban-user ban outlives an approval: the event says the account is still banned.
    denylist.apply(
        events.UserBanned(user_id=9, role="organizer", role_id=2, at=T0, account_state="banned")
    )
    denylist.apply(events.OrganizerVerified(user_id=9, organizer_id=2, account_state="banned"))
    assert denylist.refusal(token(user_id=9, iat=T0.timestamp() + 1)) == BANNED


def test_unbanning_a_rejected_organizer_keeps_their_older_tokens_invalid() -> None:
    """API.md §3.16: tokens issued before the ban stay invalid after an unban, also when the
    ban was an organizer's rejection (§2.2), which sets no line of its own; so does an
    approval (§3.12) that lifts a rejection, once its event (which carries the line) is here."""
    t1 = T0.timestamp() + 60
    denylist = DenyList()
    denylist.apply(
        events.OrganizerRejected(user_id=9, organizer_id=2, account_state="banned", at=T0)
    )
    denylist.apply(
        events.UserUnbanned(
            user_id=9,
            role="organizer",
            role_id=2,
            at=datetime.fromtimestamp(t1, UTC),
            account_state="active",
        )
    )
    assert denylist.refusal(token(user_id=9, iat=T0.timestamp() - 5)) == REVOKED
    assert denylist.refusal(token(user_id=9, iat=t1)) is None
    # At once from auth's answer, before its event.
    answered = DenyList()
    answered.follow_decision(b'{"user_id":9,"account_state":"banned"}', t1)
    assert answered.refusal(token(user_id=9)) == BANNED
    answered.unban(9, t1)
    assert answered.refusal(token(user_id=9)) == REVOKED
    approved = DenyList()
    approved.follow_decision(b'{"user_id":9,"account_state":"banned"}', T0.timestamp())
    # An approval that lifts the rejection: tokens from before it are refused at once, before
    # its event, as after an unban (the answer's moment, a second back for the clocks).
    approved.follow_decision(b'{"user_id":9,"account_state":"active"}', t1)
    assert approved.refusal(token(user_id=9, iat=t1 - 5)) == REVOKED
    assert approved.refusal(token(user_id=9, iat=t1 + 1)) is None
    # An approval of an organizer never rejected here lifts nothing and revokes nothing.
    fresh = DenyList()
    fresh.follow_decision(b'{"user_id":9,"account_state":"active"}', t1)
    assert fresh.refusal(token(user_id=9, iat=T0.timestamp())) is None
    # A gateway that learns both from auth's events: the approval's event carries the line.
    by_event = DenyList()
    by_event.apply(
        events.OrganizerRejected(user_id=9, organizer_id=2, account_state="banned", at=T0)
    )
    lifted = datetime.fromtimestamp(t1, UTC)
    by_event.apply(
        events.OrganizerVerified(user_id=9, organizer_id=2, account_state="active", at=lifted)
    )
    assert by_event.refusal(token(user_id=9, iat=T0.timestamp() - 5)) == REVOKED
    assert by_event.refusal(token(user_id=9, iat=t1)) is None


async def test_the_follower_applies_every_event_of_a_pack_from_the_relay() -> None:
    import uuid
    from types import SimpleNamespace

    from gateway.bus import DenyListFollower
    from services.kernel.broker import Names
    from services.kernel.relay import PACK_CONTENT_TYPE, envelope_bytes

    def envelope(event: events.UserBanned, sequence: int) -> bytes:
        row = SimpleNamespace(
            event_id=uuid.uuid4(),
            type=event.TYPE,
            version=1,
            occurred_at=T0,
            aggregate_id=str(event.user_id),
            correlation_id=None,
            causation_id=None,
            payload=msgspec.json.encode(event).decode(),
        )
        return envelope_bytes(row, "auth", sequence)

    bans = [
        events.UserBanned(user_id=u, role="customer", role_id=1, at=T0, account_state="banned")
        for u in (3, 4)
    ]
    follower = DenyListFollower(DenyList(), None, "amqp://unused", Names("t"))  # type: ignore[arg-type]
    pack = SimpleNamespace(
        body=b"[" + b",".join(envelope(b, i) for i, b in enumerate(bans, 1)) + b"]",
        content_type=PACK_CONTENT_TYPE,
        routing_key=events.UserBanned.TYPE,
    )
    await follower._on_message(pack)  # type: ignore[arg-type]
    assert follower.denylist.banned == {3, 4}


def test_what_the_gateway_follows_is_never_held_back_by_a_relay() -> None:
    """A relay holds back a type nobody consumes once the broker returns it (no queue): the
    gateway's own types must count as consumed, or a revocation published while every gateway
    was restarting would keep the next one from hearing of the ones after it."""
    followed = {event.TYPE for event in GATEWAY_FOLLOWS}
    assert followed <= consumed_types({})
    assert followed <= consumed_types({"catalog": ["auth.UserBanned"]})


def test_changes_made_while_a_snapshot_is_fetched_survive_its_load() -> None:
    """A snapshot read before a logout, a ban or an unban that the gateway applied (or whose
    event came) meanwhile: loaded, it does not bring them back, and the order holds."""
    denylist = DenyList()
    denylist.loading()
    denylist.revoke("logged-out", T0.timestamp() + 1800)  # at once, on a logout's answer
    denylist.ban(8, T0.timestamp())
    denylist.apply(
        events.UserBanned(user_id=9, role="customer", role_id=1, at=T0, account_state="banned")
    )
    denylist.unban(9, T0.timestamp() + 1)  # the unban came after the ban: it stays lifted
    denylist.load(Snapshot(banned_user_ids=[5], revoked_jtis={}, tokens_invalid_before={}))
    assert denylist.revoked == {"logged-out": T0.timestamp() + 1800}
    assert denylist.banned == {5, 8}
    assert denylist.refusal(token(user_id=9, iat=T0.timestamp() - 5)) == REVOKED  # from before
    denylist.revoke("later", T0.timestamp())
    denylist.load(Snapshot())  # no fetch under way: nothing kept to make again
    assert denylist.revoked == {} and denylist.banned == set()


def test_a_fetch_given_up_keeps_nothing_for_the_next_load() -> None:
    denylist = DenyList()
    denylist.loading()
    denylist.ban(8, T0.timestamp())
    denylist.not_loading()
    denylist.load(Snapshot())
    assert denylist.banned == set()
