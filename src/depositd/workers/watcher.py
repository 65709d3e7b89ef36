"""The chain watcher: follows one EVM chain and records every deposit to our addresses.

Each round it

1. asks for the head and, in the same round trip, the block at its cursor. A different hash
   there means a reorg: it walks back through its stored window of recent hashes to the fork
   point, and every deposit in a dropped block is taken back (``orphaned`` before credit,
   ``reversed`` after, with the compensating ledger entry) unless the new chain holds it too.
   While catching up, the next range is read ahead (with the head) as this one is recorded;
   when it continues the cursor's hash, the cursor is still canonical and the round skips
   this question;
2. reads the next blocks and the Transfer logs of the allow-listed tokens in them
   (``chain.evm``, batched), checked to continue the chain it holds;
3. finds the deposits in them (``chain.transfers``) and reports the confirmations of every
   deposit still waiting for more;
4. records all of it in one transaction (``services.observations``), then advances the cursor.

Checking the cursor's hash is enough to know the whole window is still canonical: each block
commits to its parent's hash. Confirmations count the blocks mined on top of a deposit's block
(0: it is in the newest block) and only blocks this round verified are counted.

Crash-safe: the cursor moves only after the round's deposits are committed, so a watcher
killed at any instant scans those blocks again on restart, and recording them again changes
nothing. When the node is unreachable it backs off, says so in ``status`` and the logs, and
catches up from its cursor when the node is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import structlog

from depositd import metrics
from depositd.chain.evm import Block, ChainMoved, ChainRange, ChainReader, NativeTx, Receipt
from depositd.chain.rpc import EvmRpc, RpcError
from depositd.chain.transfers import Transfer, find_transfers, native_candidates
from depositd.clock import utcnow, wait_set
from depositd.config import ChainConfig
from depositd.db.engine import Database
from depositd.db.recording import OwnerKey
from depositd.db.repositories import BlockRow, Owner
from depositd.domain.assets import Asset, AssetBook
from depositd.domain.deposits import (
    ChainRef,
    DepositState,
    DepositStatus,
    Observation,
    ToAddress,
    ToUser,
)
from depositd.services import watching
from depositd.services.observations import Recorded, owner_key, record_observations
from depositd.workers.backoff import Backoff

log = structlog.get_logger("depositd.watcher")

#: ranges read ahead of the one being recorded while catching up: with two, the node is
#: never idle while a round records
READ_AHEAD = 1

#: waits between attempts while the node is unreachable: up to 30 s apart
NODE_BACKOFF = Backoff(base_seconds=0.5, cap_seconds=30.0)


@dataclass
class WatcherStatus:
    """What the watcher of one chain knows about its progress; read by health checks."""

    chain: str
    #: the node's head at the last answer
    head: int | None = None
    #: the highest block scanned and recorded
    cursor: int | None = None
    #: whether the last call to the node succeeded
    node_reachable: bool = False
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_round_at: datetime | None = None
    reorgs: int = 0
    deepest_reorg: int = 0
    watched_addresses: int = 0
    #: False while another process's watcher of this chain leads and this one stands by
    leading: bool = True

    def set_leading(self, leading: bool) -> None:
        self.leading = leading

    @property
    def lag_blocks(self) -> int | None:
        if self.head is None or self.cursor is None:
            return None
        return max(0, self.head - self.cursor)

    def as_dict(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "head": self.head,
            "cursor": self.cursor,
            "lag_blocks": self.lag_blocks,
            "node_reachable": self.node_reachable,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "last_round_at": self.last_round_at.isoformat() if self.last_round_at else None,
            "reorgs": self.reorgs,
            "deepest_reorg": self.deepest_reorg,
            "watched_addresses": self.watched_addresses,
            "leading": self.leading,
        }


@dataclass
class _Waiting:
    """A deposit waiting for confirmations: enough to report the next count."""

    observation: Observation
    block_number: int
    confirmations: int


@dataclass
class _Read:
    """A range as read: its blocks and logs, what the blocks lack of the native transfers to
    our addresses in it (receipts or transactions, read by hash), and the head the node
    reported alongside (if asked)."""

    range: ChainRange
    receipts: dict[str, Receipt] = field(default_factory=dict)
    transactions: dict[str, NativeTx] = field(default_factory=dict)
    head: int | None = None


@dataclass
class _ReadAhead:
    """The next range, read while the current one is being recorded."""

    first: int
    last: int
    #: the hash of the block before ``first`` it was read to follow
    parent_hash: str
    task: asyncio.Task[_Read]

    def discard(self) -> None:
        self.task.cancel()
        # a failed read nobody waits for must not be reported as never retrieved
        self.task.add_done_callback(lambda task: task.cancelled() or task.exception())


@dataclass
class _Round:
    """One round's findings before they are recorded."""

    fork_point: int | None = None
    dropped: list[DepositState] = field(default_factory=list)
    scanned: ChainRange | None = None
    transfers: list[Transfer] = field(default_factory=list)


class ChainWatcher:
    def __init__(
        self,
        db: Database,
        assets: AssetBook,
        chain: str,
        config: ChainConfig,
        *,
        rpc: EvmRpc | None = None,
        backoff: Backoff = NODE_BACKOFF,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if config.rpc_url is None and rpc is None:
            raise ValueError(f"chain {chain} has no rpc_url to watch")
        self.chain = chain
        self.config = config
        self.status = WatcherStatus(chain)
        self._db = db
        self._assets = assets
        self._rpc = rpc or EvmRpc(str(config.rpc_url), timeout_seconds=config.rpc_timeout_seconds)
        self._reader = ChainReader(
            self._rpc,
            batch_size=config.rpc_batch_size,
            concurrency=config.rpc_concurrency,
            native_reads=config.native_reads,
        )
        self._backoff = backoff
        self._clock = clock
        on_chain = [asset for asset in assets.values() if asset.chain == chain]
        self._tokens: dict[str, Asset] = {a.contract: a for a in on_chain if a.contract}
        natives = [asset for asset in on_chain if asset.contract is None]
        self._native: Asset | None = natives[0] if natives else None
        self._watched = watching.WatchedAddresses(db, chain)
        self._window: list[BlockRow] = []
        self._waiting: dict[str, _Waiting] = {}
        self._loaded = False
        self._new_head = asyncio.Event()
        self._ahead: deque[_ReadAhead] = deque()

    async def close(self) -> None:
        self._discard_reads_ahead()
        await self._rpc.close()

    async def __aenter__(self) -> ChainWatcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Follow the chain until cancelled."""
        self._loaded = False  # (re)start from what the database holds
        listener = (
            asyncio.create_task(self._listen_for_heads(str(self.config.ws_url)))
            if self.config.ws_url
            else None
        )
        failures = 0
        try:
            while True:
                try:
                    behind = await self.step()
                except (RpcError, ChainMoved) as exc:
                    failures += 1
                    self._failed(exc, failures)
                    await asyncio.sleep(self._backoff.delay(failures))
                    continue
                if failures:
                    log.info("node_back", chain=self.chain, after_failures=failures)
                    failures = 0
                if not behind:
                    await self._wait_for_head()
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            await self.close()

    def _failed(self, exc: Exception, failures: int) -> None:
        self.status.last_error = str(exc)
        self.status.last_error_at = self._clock()
        if isinstance(exc, ChainMoved):
            log.info("chain_moved_while_reading", chain=self.chain, detail=str(exc))
            return
        self.status.node_reachable = False
        # every failure while it lasts would flood the log: say it at 1, 2, 4, 8, ...
        if failures & (failures - 1) == 0:
            log.warning(
                "node_unreachable",
                chain=self.chain,
                error=str(exc),
                failures=failures,
                lag_blocks=self.status.lag_blocks,
                cursor=self.status.cursor,
            )

    async def _wait_for_head(self) -> None:
        await wait_set(self._new_head, self.config.poll_interval_seconds)
        self._new_head.clear()

    async def _listen_for_heads(self, url: str) -> None:
        """Wake the loop on every ``newHeads`` notification; polling covers any gap."""
        attempt = 0
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.ws_connect(url, heartbeat=30) as ws:
                        await ws.send_json(
                            {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                             "params": ["newHeads"]}
                        )  # fmt: skip
                        attempt = 0
                        async for message in ws:
                            if message.type is aiohttp.WSMsgType.TEXT and _is_notification(
                                message.data
                            ):
                                self._new_head.set()
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    attempt += 1
                    if attempt == 1:
                        log.info("new_heads_unavailable", chain=self.chain, error=str(exc))
                await asyncio.sleep(self._backoff.delay(attempt + 1))

    # -- one round -------------------------------------------------------------------------

    async def step(self) -> bool:
        """One round; True if the chain is further ahead than this round could read."""
        if not self._loaded:
            await self._load()
        tip = self._window[-1] if self._window else None
        found = _Round()
        if tip is not None and self._reading_ahead_from(tip):
            # the range read ahead must continue the cursor's hash (``read_range`` checks):
            # that is this round's reorg check, and that read brings the head along
            head = self.status.head or tip.number
        else:
            head, tip_now = await self._reader.head_and_block(tip.number if tip else None)
            self.status.head = head
            self.status.node_reachable = True
            if tip is not None and tip_now is None and head < tip.number:
                # a node behind our cursor (restarted, or one of several behind a balancer)
                # says nothing about our blocks yet: wait for it rather than undo deposits
                log.info("node_behind_cursor", chain=self.chain, head=head, cursor=tip.number)
                return False
            if tip is not None and (tip_now is None or tip_now.hash != tip.hash):
                found.fork_point = await self._fork_point()
                found.dropped = await watching.deposits_above(
                    self._db, self.chain, found.fork_point
                )
                self._window = [b for b in self._window if b.number <= found.fork_point]
                tip = self._window[-1] if self._window else None
        if tip is not None:
            cursor = tip.number
        elif self.config.start_block == "latest":
            cursor = head - 1
        else:
            cursor = self.config.start_block - 1
        last = min(head, cursor + self.config.max_blocks_per_round)
        if last > cursor:
            read = await self._read(cursor + 1, last, tip.hash if tip else None)
            if read.head is not None:
                self.status.head = max(self.status.head or read.head, read.head)
            head = max(head, self.status.head or head)
            found.scanned = read.range
            last = read.range.last.number
            # addresses are refreshed after the blocks are read: an address a deposit in them
            # was sent to was handed out, so committed, before that deposit was sent
            await self._watched.refresh()
            self.status.watched_addresses = len(self._watched.addresses)
            found.transfers = await self._transfers(read)
            # catching up, the node reads the next ranges while this one is recorded (not
            # sooner: this range's receipts would queue behind them)
            self._keep_reading_ahead(read)
        verified = max(last, cursor) if tip is not None or found.scanned else None
        if verified is not None:
            await self._record(found, verified)
            await self._advance(found)
        self.status.last_round_at = self._clock()
        return last < head

    def _reading_ahead_from(self, tip: BlockRow) -> bool:
        if not self._ahead:
            return False
        ahead = self._ahead[0]
        return (ahead.first, ahead.parent_hash) == (tip.number + 1, tip.hash)

    async def _read(self, first: int, last: int, parent_hash: str | None) -> _Read:
        """Blocks ``first..last`` (fewer if a read ahead already covers the start)."""
        if self._ahead:
            ahead = self._ahead[0]
            if (ahead.first, ahead.parent_hash) == (first, parent_hash) and ahead.last <= last:
                self._ahead.popleft()
                try:
                    return await ahead.task
                except BaseException:
                    self._discard_reads_ahead()  # they continue a range that failed
                    raise
            self._discard_reads_ahead()
        return await self._read_range(first, last, parent_hash)

    def _keep_reading_ahead(self, read: _Read) -> None:
        """Keep ``READ_AHEAD`` ranges read ahead of ``read``'s while the chain goes on.

        Each range must continue the hash of the one before, so a range is asked for once
        the one before it is in: by the round when none is in flight, else when the last
        one in flight arrives (``_read_ahead_arrived``).
        """
        if not self._ahead:
            self._read_ahead_after(read.range.last)
        elif self._ahead[-1].task.done():
            self._read_ahead_arrived(self._ahead[-1])

    def _read_ahead_after(self, block: Block) -> None:
        head = self.status.head
        if head is None or block.number >= head or len(self._ahead) >= READ_AHEAD:
            return
        first, last = block.number + 1, min(head, block.number + self.config.max_blocks_per_round)
        task = asyncio.create_task(self._read_range(first, last, block.hash, with_head=True))
        ahead = _ReadAhead(first, last, block.hash, task)
        self._ahead.append(ahead)
        task.add_done_callback(lambda _: self._read_ahead_arrived(ahead))

    def _read_ahead_arrived(self, ahead: _ReadAhead) -> None:
        task = ahead.task
        if task.cancelled() or task.exception() is not None:
            return  # whoever takes it hears of the failure
        read = task.result()
        if read.head is not None:
            self.status.head = max(self.status.head or read.head, read.head)
        if self._ahead and self._ahead[-1] is ahead:
            self._read_ahead_after(read.range.last)

    def _discard_reads_ahead(self) -> None:
        while self._ahead:
            self._ahead.pop().discard()

    async def _read_range(
        self, first: int, last: int, parent_hash: str | None, *, with_head: bool = False
    ) -> _Read:
        reading = self._reader.read_range(
            first,
            last,
            contracts=self._tokens.keys(),
            native=self._native is not None,
            parent_hash=parent_hash,
        )
        if with_head:
            chain_range, head = await asyncio.gather(reading, self._rpc.block_number())
        else:
            chain_range, head = await reading, None
        read = _Read(chain_range, head=head)
        await self._complete_candidates(read)
        return read

    async def _complete_candidates(self, read: _Read) -> None:
        """Read by hash what ``read``'s blocks lack of the native transfers to our addresses:
        receipts of the transactions in full blocks, transactions of the receipts."""
        candidates = native_candidates(read.range.blocks, self._watched.addresses, self._native)
        receipts = [
            c.tx_hash for c in candidates if c.receipt is None and c.tx_hash not in read.receipts
        ]
        transactions = [
            c.tx_hash for c in candidates if c.tx is None and c.tx_hash not in read.transactions
        ]
        if receipts:
            found_receipts = await self._reader.receipts(receipts)
            read.receipts.update((r.tx_hash, r) for r in found_receipts if r is not None)
        if transactions:
            found_txs = await self._reader.transactions(transactions)
            read.transactions.update((tx.hash, tx) for tx in found_txs if tx is not None)

    async def _load(self) -> None:
        rows = await watching.window(self._db, self.chain)
        self._window = rows
        self.status.cursor = rows[-1].number if rows else None
        for deposit in await watching.open_deposits(self._db, self.chain):
            self._wait_for(_owned_observation(deposit), deposit)
        await self._watched.refresh()
        self.status.watched_addresses = len(self._watched.addresses)
        self._loaded = True
        log.info(
            "watching",
            chain=self.chain,
            cursor=self.status.cursor,
            addresses=len(self._watched.addresses),
            waiting=len(self._waiting),
            tokens=sorted(a.code for a in self._tokens.values()),
        )

    async def _fork_point(self) -> int:
        """The highest stored block the node still has; walks back through the window."""
        numbers = [b.number for b in reversed(self._window)]
        canonical = await self._reader.headers(numbers)
        stored = list(reversed(self._window))
        for ours, theirs in zip(stored, canonical, strict=True):
            if theirs is not None and theirs.hash == ours.hash:
                fork = ours.number
                break
        else:
            fork = self._window[0].number - 1
            log.critical(
                "reorg_deeper_than_window",
                chain=self.chain,
                window_blocks=len(self._window),
                detail="deposits below the window cannot be re-checked; raise reorg_window",
            )
        depth = self._window[-1].number - fork
        self.status.reorgs += 1
        metrics.REORGS.labels(self.status.chain).inc()
        self.status.deepest_reorg = max(self.status.deepest_reorg, depth)
        log.warning("reorg", chain=self.chain, fork_point=fork, depth=depth)
        return fork

    async def _transfers(self, read: _Read) -> list[Transfer]:
        # addresses made since the range was read may want more receipts or transactions
        await self._complete_candidates(read)
        return find_transfers(
            self.chain,
            read.range,
            self._watched.addresses,
            self._tokens,
            self._native,
            read.receipts,
            read.transactions,
        )

    async def _record(self, found: _Round, verified: int) -> None:
        """Record the round's deposits and confirmations, oldest block first, in one batch."""
        observations: list[Observation] = []
        moved = {t.ref.key for t in found.transfers}
        for deposit in found.dropped:
            reincluded = deposit.ref.key in moved
            if reincluded and deposit.status in watching.OPEN:
                continue  # its new sighting moves it to the new block
            observations.append(_owned_observation(deposit, confirmations=0, removed=True))
        for transfer in found.transfers:
            observations.append(
                Observation(
                    ref=transfer.ref,
                    owner=ToAddress(self.chain, transfer.address),
                    asset=transfer.asset,
                    amount=transfer.amount,
                    confirmations=verified - transfer.block_number,
                    block_number=transfer.block_number,
                    block_hash=transfer.block_hash,
                    rejection=transfer.rejection,
                )
            )
        dropped_keys = {d.ref.key for d in found.dropped}
        for key, waiting in self._waiting.items():
            if key in moved or key in dropped_keys:
                continue
            confirmations = verified - waiting.block_number
            if confirmations > waiting.confirmations:
                observations.append(_with_confirmations(waiting.observation, confirmations))
        if not observations:
            return
        # new transfers name one of our addresses, whose owner we hold; the rest name the
        # user of a deposit already recorded, and are looked up (and remembered)
        owners: dict[OwnerKey, Owner] = {}
        for observation in observations:
            owned = owner_key(observation.owner)
            if owned[0] == "address" and (owner := self._watched.owner(owned[2])) is not None:
                owners[owned] = owner
        recorded = await record_observations(self._db, self._assets, observations, owners=owners)
        self._note(observations, recorded)

    def _note(self, observations: Sequence[Observation], recorded: Sequence[Recorded]) -> None:
        for observation, result in zip(observations, recorded, strict=True):
            deposit = result.deposit
            if deposit is None:
                continue
            if deposit.status in watching.OPEN and deposit.block_number is not None:
                self._wait_for(observation, deposit)
            else:
                self._waiting.pop(observation.ref.key, None)
            if result.changed and deposit.status is DepositStatus.REVERSED:
                # TODO(issue 6): route through the alert sinks once they exist
                log.error(
                    "deposit_reversed",
                    chain=self.chain,
                    deposit=deposit.id,
                    asset=deposit.asset,
                    amount=str(deposit.amount),
                    tx=deposit.tx_hash,
                )

    def _wait_for(self, observation: Observation, deposit: DepositState) -> None:
        assert deposit.block_number is not None
        self._waiting[observation.ref.key] = _Waiting(
            observation, deposit.block_number, deposit.confirmations
        )

    async def _advance(self, found: _Round) -> None:
        scanned = found.scanned.blocks if found.scanned else ()
        rows = [BlockRow(b.number, b.hash, b.parent_hash) for b in scanned]
        window = [*self._window, *rows]
        keep_from = window[-1].number - self.config.reorg_window + 1 if window else 0
        if rows or found.fork_point is not None:
            await watching.save_window(
                self._db, self.chain, rows, fork_point=found.fork_point, keep_from=keep_from
            )
        self._window = [b for b in window if b.number >= keep_from]
        self.status.cursor = self._window[-1].number if self._window else None


def _is_notification(data: str) -> bool:
    try:
        message = json.loads(data)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("method") == "eth_subscription"


def _owned_observation(
    deposit: DepositState, *, confirmations: int | None = None, removed: bool = False
) -> Observation:
    """An observation of a deposit we recorded before, owned by its user."""
    assert isinstance(deposit.ref, ChainRef)
    return Observation(
        ref=deposit.ref,
        owner=ToUser(deposit.merchant_id, deposit.user_external_id),
        asset=deposit.asset,
        amount=deposit.amount,
        confirmations=deposit.confirmations if confirmations is None else confirmations,
        block_number=deposit.block_number,
        block_hash=deposit.block_hash,
        removed=removed,
    )


def _with_confirmations(observation: Observation, confirmations: int) -> Observation:
    return dataclasses.replace(observation, confirmations=confirmations)
