"""One LISTEN connection per process for every PostgreSQL channel it follows.

The relay follows `outbox_<schema>` (commits of other instances that wrote events) and the
answer cache `changed_<schema>` (changes to the tables its answers are read from). Both are
served by one connection: a subscriber gives a callback for each notification and, if it
needs to know, one told whenever listening starts or stops (a connection lost, then back).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg

from services.kernel.db import Database

log = logging.getLogger("resellio.notifications")


class Notifications:
    def __init__(self, db: Database, reconnect_s: float = 1.0) -> None:
        self.db = db
        self.reconnect_s = reconnect_s
        self.live = False
        self._channels: dict[str, list[Callable[[], None]]] = {}
        self._on_live: list[Callable[[bool], None]] = []
        self._conn: asyncpg.Connection | None = None

    def subscribe(
        self,
        channel: str,
        on_notify: Callable[[], None],
        on_live: Callable[[bool], None] | None = None,
    ) -> None:
        """Before `run`: call `on_notify` for each notification on `channel`, and `on_live`
        with True when listening starts (anything may have happened before) and False when
        it stops."""
        self._channels.setdefault(channel, []).append(on_notify)
        if on_live is not None:
            self._on_live.append(on_live)

    def _deliver(self, _conn: object, _pid: int, channel: str, _payload: str) -> None:
        for on_notify in self._channels.get(channel, ()):
            on_notify()

    def _set_live(self, live: bool) -> None:
        self.live = live
        for on_live in self._on_live:
            on_live(live)

    async def run(self) -> None:
        while True:
            try:
                url = self.db.engine.url.set(drivername="postgresql")
                self._conn = await asyncpg.connect(
                    url.render_as_string(hide_password=False), timeout=5
                )
                lost = asyncio.Event()
                self._conn.add_termination_listener(lambda _, lost=lost: lost.set())
                for channel in self._channels:
                    await self._conn.add_listener(channel, self._deliver)
                self._set_live(True)
                await lost.wait()
                log.warning("lost the LISTEN connection")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot LISTEN: %s", exc)
            finally:
                if self.live:
                    self._set_live(False)
                await self.close()
            await asyncio.sleep(self.reconnect_s)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            await conn.close()
