"""Fan committed events out to each merchant's WebSocket streams, gap-free and bounded.

**The horizon.** Each process runs one ``EventHub``. It keeps a *horizon*: a seq such that
every event with a seq at or below it is committed. Nothing past the horizon is ever handed
to a stream, so an event committed late — a lower seq after a higher one, by a concurrent
writer — cannot be skipped: it holds the horizon back until it lands. The counter behind
``seq`` is global and gap-free (each writer advances ``event_counter`` and inserts its events
in the same transaction, so a rollback takes back both), which makes the horizon easy to
prove from the database alone: read the counter's committed ``last_seq``, then count the
events in ``(horizon, last_seq]``; if all are there, the horizon moves to ``last_seq``.
Otherwise some writer has taken a seq it has not committed yet, and the horizon moves only
over the unbroken run of seqs above it. (With today's writers, which hold the counter's row
lock until they commit, the count always matches; the fall-back costs nothing until it is
needed.) Events are never deleted, so a hole that stays would be a broken log — the ledger
audit reports it, and the hub logs it rather than skip it.

**Fan-out.** When the horizon moves, the hub reads the events it passed over for every
merchant that has a stream in this process (one query for all streams) and offers them to
those streams, then publishes the new horizon — in one step, with no ``await`` between the
offers and the publication. A stream subscribes at the current horizon (its *floor*) and
is offered every later event of its merchant. It first replays its merchant's log from the
client's cursor with ordinary reads bounded by the horizon, then switches to the offered
events, dropping any it already sent: replay covers ``(cursor, horizon]``, offers cover
``(floor, …)``, and the switch happens only once a replay read finds nothing left below
the horizon, so together they miss nothing and each seq goes out once.

**Bounded.** Offered events wait in a stream's backlog of at most
``StreamSettings.max_backlog``. During replay an overflow costs nothing (the backlog is
dropped and the log read on, as it holds everything). Once live, an overflow means the
client reads slower than its events arrive: the stream ends with ``TooSlow`` and the client
resumes from the last seq it received.

**Wake-ups.** On PostgreSQL one connection per process ``LISTEN``\\ s on ``depositd_events``,
which a trigger on ``events`` notifies whenever a transaction that appended events commits,
in any process (migration 0008). Recording in this process also wakes the hub directly
(``services.observations.on_events_committed``), the only prompt signal SQLite has. And the
hub re-reads the horizon every ``poll_seconds`` regardless, so no wake-up is ever needed
for correctness, only for speed.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass

import structlog

from depositd.clock import wait_set
from depositd.db.engine import Database
from depositd.db.notify import EventNotifications
from depositd.services.observations import on_events_committed
from depositd.services.queries import Event, committed_through, events_after, events_between

log = structlog.get_logger("depositd.delivery")

#: how long the horizon may wait for one missing seq before the hub says so
HOLE_PATIENCE_SECONDS = 60.0


@dataclass(frozen=True)
class StreamSettings:
    #: seconds between heartbeats on every stream
    heartbeat_seconds: float = 15.0
    #: events offered to a live stream and not yet taken before its client counts as too slow
    max_backlog: int = 1000
    #: seconds between horizon checks that no notification prompted
    poll_seconds: float = 1.0
    #: seconds a connection without an ``Authorization`` header has to send its key
    auth_timeout_seconds: float = 5.0
    #: events per replay read
    replay_page: int = 500
    #: seqs the horizon moves per step (the most events one fan-out read holds in memory)
    max_step: int = 5000


class StreamEnded(Exception):
    """A stream cannot go on; the client resumes from ``Subscription.last_seq``."""


class TooSlow(StreamEnded):
    """More events piled up for a live stream than its backlog holds."""

    def __init__(self, backlog: int) -> None:
        super().__init__(f"more than {backlog} events behind")
        self.backlog = backlog


class StreamClosed(StreamEnded):
    """The subscription was closed: by its connection, or by the hub shutting down."""


class Subscription:
    """One stream of one merchant's events in seq order, from a cursor on.

    Take events with ``next_events``; ``last_seq`` is the last seq it returned — once those
    events are sent, the client's resume cursor.
    """

    def __init__(self, hub: EventHub, merchant_id: str, last_seq: int, max_backlog: int) -> None:
        self.merchant_id = merchant_id
        self.last_seq = last_seq
        self._hub = hub
        self._max_backlog = max_backlog
        self._backlog: list[Event] = []
        self._overflowed = False
        self._replaying = True
        self._closed = False
        self._arrived = asyncio.Event()

    def offer(self, offered: Collection[Event]) -> None:
        """Queue live events (the hub's call); beyond the backlog's bound they are dropped."""
        if self._closed or self._overflowed:
            return
        if len(self._backlog) + len(offered) > self._max_backlog:
            self._overflowed = True
            self._backlog.clear()
        else:
            self._backlog.extend(offered)
        self._arrived.set()

    def close(self) -> None:
        """Stop the stream; a ``next_events`` waiting now or later raises ``StreamClosed``."""
        if not self._closed:
            self._closed = True
            self._backlog.clear()
            self._arrived.set()
            self._hub.unsubscribe(self)

    async def next_events(self, wait: float) -> list[Event]:
        """The next events after ``last_seq``, in seq order; [] if none came within ``wait``.

        Raises ``TooSlow`` once a live stream's backlog overflowed, ``StreamClosed`` once the
        subscription is closed.
        """
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            if self._closed:
                raise StreamClosed("the stream is closed")
            if self._overflowed:
                if not self._replaying:
                    raise TooSlow(self._max_backlog)
                self._overflowed = False  # the log holds what was dropped: replay reads it
            if self._replaying:
                horizon = self._hub.horizon
                page = await events_after(
                    self._hub.db, self.merchant_id, self.last_seq, self._hub.settings.replay_page
                )
                ready = [event for event in page if event.seq <= horizon]
                if ready:
                    self.last_seq = ready[-1].seq
                    return ready
                # Nothing left up to ``horizon``; everything above it since the last reset was
                # offered — unless an overflow dropped some while we read: then read on.
                if not self._overflowed:
                    self._replaying = False
                continue
            fresh = [event for event in self._backlog if event.seq > self.last_seq]
            self._backlog.clear()
            if fresh:
                self.last_seq = fresh[-1].seq
                return fresh
            self._arrived.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return []
            await wait_set(self._arrived, remaining)


class EventHub:
    """This process's one follower of the committed event log (see the module docstring).

    It starts with the first subscription and runs until ``close``.
    """

    def __init__(self, db: Database, settings: StreamSettings | None = None) -> None:
        self.db = db
        self.settings = settings if settings is not None else StreamSettings()
        self._horizon = 0
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        #: held while the horizon moves, and while a subscription takes its floor
        self._moving = asyncio.Lock()
        self._wake = asyncio.Event()
        self._follower: asyncio.Task[None] | None = None
        self._notifications = EventNotifications(db, self._wake.set)
        self._stop_commit_listener: Callable[[], None] | None = None
        #: the first seq the horizon waits for, and since when (loop time)
        self._hole: tuple[int, float] | None = None
        self.closed = False

    @property
    def horizon(self) -> int:
        """Every event with a seq up to this one is committed."""
        return self._horizon

    async def subscribe(self, merchant_id: str, after: int | None) -> Subscription:
        """A stream of the merchant's events after seq ``after`` (None: from now on)."""
        async with self._moving:
            if self.closed:
                raise StreamClosed("the server is shutting down")
            if self._follower is None:
                self._horizon, _ = await committed_through(self.db, 0, None)
                self._stop_commit_listener = on_events_committed(self.db, self._wake.set)
                self._follower = asyncio.create_task(self._follow(), name="event-hub")
            start = self._horizon if after is None else after
            subscription = Subscription(self, merchant_id, start, self.settings.max_backlog)
            self._subscribers[merchant_id].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        streams = self._subscribers.get(subscription.merchant_id)
        if streams is not None:
            streams.discard(subscription)
            if not streams:
                del self._subscribers[subscription.merchant_id]

    async def close(self) -> None:
        """Stop following the log and end every stream (``StreamClosed``)."""
        self.closed = True
        if self._stop_commit_listener is not None:
            self._stop_commit_listener()
        if self._follower is not None:
            self._wake.set()
            try:  # let a read in progress finish rather than cancel it mid-statement
                await asyncio.wait_for(self._follower, timeout=5)
            except TimeoutError:
                log.warning("event_hub_stop_timeout")
            self._follower = None
        await self._notifications.close()
        for streams in list(self._subscribers.values()):
            for subscription in list(streams):
                subscription.close()

    async def _follow(self) -> None:
        while not self.closed:
            await self._notifications.keep_listening()
            try:
                while await self._advance():
                    pass
            except Exception:  # the database is away: streams wait, the next round retries
                log.exception("event_hub_read_failed")
            await wait_set(self._wake, self.settings.poll_seconds)
            self._wake.clear()

    async def _advance(self) -> bool:
        """Move the horizon one step and offer the events it passes; True if it moved."""
        async with self._moving:
            old = self._horizon
            new, whole = await committed_through(self.db, old, self.settings.max_step)
            self._watch_hole(None if whole else new + 1)
            if new == old:
                return False
            passed = await events_between(self.db, list(self._subscribers), old, new)
            # From here to the new horizon's publication there is no ``await``: a stream
            # that sees the new horizon has been offered everything up to it.
            by_merchant: dict[str, list[Event]] = defaultdict(list)
            for merchant_id, event in passed:
                by_merchant[merchant_id].append(event)
            for merchant_id, offered in by_merchant.items():
                for subscription in list(self._subscribers.get(merchant_id, ())):
                    subscription.offer(offered)
            self._horizon = new
            return True

    def _watch_hole(self, missing: int | None) -> None:
        """Log once if the horizon has waited a long while for the same missing seq."""
        now = asyncio.get_running_loop().time()
        if missing is None or self._hole is None or self._hole[0] != missing:
            self._hole = None if missing is None else (missing, now)
        elif now - self._hole[1] > HOLE_PATIENCE_SECONDS:
            log.warning("event_log_hole", seq=missing, detail="streams wait for it to commit")
            self._hole = (missing, float("inf"))  # said once
