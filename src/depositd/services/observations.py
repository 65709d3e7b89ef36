"""Record what a source observed about deposits: the one way money enters the ledger."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from weakref import WeakKeyDictionary

import structlog

from depositd import metrics
from depositd.clock import utcnow
from depositd.db.engine import Database
from depositd.db.recording import OwnerKey, RecordingStore, find_owners, open_recording
from depositd.db.repositories import Owner
from depositd.db.transient import RetryTransaction, retry_transient
from depositd.domain import deposits as machine
from depositd.domain.assets import AssetBook
from depositd.domain.deposits import ChainRef, DepositState, Observation, ToAddress, ToUser
from depositd.domain.events import PendingEvent, deposit_event
from depositd.domain.ledger import Entry, postings_for
from depositd.errors import InputError, ObservationConflict, UnknownOwner
from depositd.ids import new_id
from depositd.services.screening import screen

log = structlog.get_logger("depositd.deposits")


@dataclass(frozen=True)
class Recorded:
    """What one observation did: the deposit after it, and the event it caused (if any)."""

    deposit: DepositState | None
    changed: bool
    seq: int | None

    @property
    def outcome(self) -> str:
        """The deposit's status after a change, else ``unchanged``."""
        if self.deposit is not None and self.changed:
            return self.deposit.status.value
        return "unchanged"


async def record_observation(db: Database, assets: AssetBook, observation: Observation) -> Recorded:
    """Record one observation in its own transaction."""
    (recorded,) = await record_observations(db, assets, [observation])
    return recorded


async def record_observations(
    db: Database,
    assets: AssetBook,
    observations: Sequence[Observation],
    *,
    clock: Callable[[], datetime] = utcnow,
    callbacks: Sequence[str | None] | None = None,
    owners: Mapping[OwnerKey, Owner] | None = None,
) -> list[Recorded]:
    """Record a batch (say, one block's worth) in one transaction, in order.

    ``callbacks`` names, for each observation, the stored inbound callback it comes from (or
    None): the same transaction marks those processed, with what recording them did.
    ``owners`` may say who owns some of the observations (keyed by ``owner_key``): a caller
    that already knows, as the chain watcher knows its addresses; the rest are looked up.

    Idempotent: an observation that adds nothing (a duplicate, a replay, a stale confirmation
    count) changes nothing and emits nothing. Each real change moves the deposit through the
    state machine, bumps its ``version``, appends one event with the next global ``seq``,
    queues one outbox row per subscribed endpoint, and — for a credit or its reversal — posts
    ledger entries that a unique key allows only once per deposit generation.
    """
    for observation in observations:
        asset = assets[observation.asset]
        if isinstance(observation.ref, ChainRef) and observation.ref.chain != asset.chain:
            raise InputError(
                f"asset {asset.code} lives on {asset.chain}, not {observation.ref.chain}"
            )
    if not observations:
        return []

    owners_of = await _owners(db, observations, owners or {})

    async def attempt() -> list[Recorded]:
        async with open_recording(db) as store:
            now = clock()
            recorded = await _record(store, assets, observations, owners_of, now)
            outcomes = [
                (callback_id, r.deposit.id if r.deposit is not None else None, r.outcome, now)
                for callback_id, r in zip(callbacks or (), recorded, strict=False)
                if callback_id is not None
            ]
            if outcomes:
                await store.mark_callbacks(outcomes)
            await store.commit()
            _announce_commit(db, recorded)
            _log_changes(recorded)
            return recorded

    return await retry_transient(attempt)


#: per database, what to call when recording in this process has committed events
_commit_listeners: WeakKeyDictionary[Database, set[Callable[[], None]]] = WeakKeyDictionary()


def on_events_committed(db: Database, listener: Callable[[], None]) -> Callable[[], None]:
    """Call ``listener`` whenever recording in this process commits events to ``db``.

    A prompt wake-up for readers of the event log (the WebSocket hub), never their only one:
    other writers and other processes do not call it. Returns the function that stops it.
    """
    listeners = _commit_listeners.setdefault(db, set())
    listeners.add(listener)
    return lambda: listeners.discard(listener)


#: transitions worth a line at info level; the rest (pending, confirming) go to debug
_NOTABLE = frozenset({"credited", "held", "rejected", "orphaned", "reversed", "failed"})


def _log_changes(recorded: Sequence[Recorded]) -> None:
    """Count and log the committed transitions, one line each with the deposit's id."""
    changed = [r.deposit for r in recorded if r.changed and r.deposit is not None]
    metrics.count_recorded((d.status.value, d.reason.code) for d in changed)
    for deposit in changed:
        status = deposit.status.value
        (log.info if status in _NOTABLE else log.debug)(
            "deposit_" + status,
            deposit_id=deposit.id,
            merchant_id=deposit.merchant_id,
            asset=deposit.asset,
            amount=str(deposit.amount),
            version=deposit.version,
            reason=deposit.reason.code,
        )


def _announce_commit(db: Database, recorded: Sequence[Recorded]) -> None:
    if any(r.changed for r in recorded):
        announce_events(db)


def announce_events(db: Database) -> None:
    """Tell this process's listeners that events were just committed to ``db``."""
    for listener in tuple(_commit_listeners.get(db, ())):
        listener()


@dataclass
class _Batch:
    """The changes one batch makes, collected before they are written."""

    states: dict[str, DepositState]
    dirty: dict[str, DepositState]
    postings: list[tuple[str, Entry]]
    events: list[PendingEvent]
    #: the deposit as of each event (a batch may move one deposit several times)
    snapshots: list[DepositState]


async def _record(
    store: RecordingStore,
    assets: AssetBook,
    observations: Sequence[Observation],
    owners: Sequence[Owner],
    now: datetime,
) -> list[Recorded]:
    identities = [obs.ref.key for obs in observations]
    states = await store.lock(identities)
    screened = await screen(store, assets, observations, owners, now)
    decide = screened.decide

    # First sightings are inserted up front: a concurrent writer inserting the same identity
    # makes ours conflict, and we then lock its committed row and treat it as known.
    first_seen: dict[str, tuple[int, DepositState, machine.Transition]] = {}
    for index, obs in enumerate(observations):
        key = obs.ref.key
        if key in states or key in first_seen:
            continue
        transition = decide(None, obs, owners[index])
        if transition is not None:
            owner = owners[index]
            deposit = machine.first_sight(
                new_id("dep"),
                obs,
                owner.merchant_id,
                owner.user_id,
                owner.external_id,
                transition,
                now,
            )
            first_seen[key] = (index, deposit, transition)
    inserted = await store.insert_new(
        [deposit for _, deposit, _ in sorted(first_seen.values(), key=lambda f: f[1].ref.key)]
    )
    if raced := set(first_seen) - inserted:
        states.update(await store.lock(raced))

    batch = _Batch(states=states, dirty={}, postings=[], events=[], snapshots=[])
    changed_at: list[int | None] = []
    for index, obs in enumerate(observations):
        key = obs.ref.key
        first = first_seen.get(key)
        if first is not None and key in inserted and first[0] == index:
            _, deposit, transition = first
            batch.states[key] = deposit
            changed_at.append(_note(batch, deposit, transition, assets))
            continue
        current = batch.states.get(key)
        if current is not None and current.user_id != owners[index].user_id:
            raise ObservationConflict(f"deposit {current.id} belongs to another user")
        transition = decide(current, obs, owners[index])
        if transition is None:
            changed_at.append(None)
            continue
        if current is None:
            # a first sighting whose row we neither inserted nor found locked: never drop it
            raise RetryTransaction(f"deposit {key} was neither inserted nor found")
        deposit = machine.apply(current, transition, now)
        batch.states[key] = batch.dirty[key] = deposit
        changed_at.append(_note(batch, deposit, transition, assets))

    await screened.save(store)
    await store.update(list(batch.dirty.values()))
    seqs = await store.post_and_append(batch.postings, batch.events, now)
    return [
        Recorded(
            deposit=batch.states.get(obs.ref.key)
            if event_index is None
            else batch.snapshots[event_index],
            changed=event_index is not None,
            seq=None if event_index is None else seqs[event_index],
        )
        for obs, event_index in zip(observations, changed_at, strict=True)
    ]


def _note(
    batch: _Batch, deposit: DepositState, transition: machine.Transition, assets: AssetBook
) -> int:
    """Queue the event and postings of one transition; returns the event's index."""
    if transition.posting is not None:
        batch.postings.extend((deposit.id, e) for e in postings_for(deposit, transition.posting))
    batch.events.append(deposit_event(new_id("evt"), deposit, assets[deposit.asset]))
    batch.snapshots.append(deposit)
    return len(batch.events) - 1


async def _look_up(db: Database, keys: set[OwnerKey]) -> dict[OwnerKey, Owner]:
    """The users these keys name (unknown ones left out), remembered on ``db``.

    Answers come from what this call saw, not from the cache afterwards: another lookup may
    empty a full cache while this one waits for the database.
    """
    cache = db.owner_cache
    known = {key: cache[key] for key in keys if key in cache}
    missing = keys - known.keys()
    if missing:
        found = await find_owners(db, missing)
        if len(cache) + len(found) > _OWNER_CACHE_LIMIT:
            cache.clear()
        cache.update(found)
        known.update(found)
    return known


async def _owners(
    db: Database, observations: Sequence[Observation], given: Mapping[OwnerKey, Owner]
) -> list[Owner]:
    """The owning user of each observation: from ``given``, else looked up.

    Addresses and external ids never change owner, so answers are remembered on ``db`` and
    the write transaction does not pay for the lookup.
    """
    keys = [owner_key(obs.owner) for obs in observations]
    missing = {key for key in keys if key not in given}
    known = {**given, **await _look_up(db, missing)} if missing else given
    owners = []
    for obs, key in zip(observations, keys, strict=True):
        owner = known.get(key)
        if owner is None:
            if isinstance(obs.owner, ToUser):
                raise UnknownOwner(f"no user {obs.owner.external_id!r}")
            raise UnknownOwner(f"no address {obs.owner.address} on {obs.owner.chain}")
        owners.append(owner)
    return owners


_OWNER_CACHE_LIMIT = 200_000


def owner_key(owner: ToUser | ToAddress) -> OwnerKey:
    """How ``owners`` and the owner cache name the owner of an observation."""
    if isinstance(owner, ToUser):
        return ("user", owner.merchant_id, owner.external_id)
    return ("address", owner.chain, owner.address.lower())
