"""Read ranges of an EVM chain: blocks, token Transfer logs and receipts, checked to chain up.

The watcher asks for a range of blocks in as few round trips as the node allows: the block
headers, what it needs to find native coin sent to our addresses, and one ``eth_getLogs`` for
the allow-listed token contracts go out as JSON-RPC batches, several in flight at once. Native
coin is found one of two ways (``NativeReads``):

* ``receipts`` (the default): each block's receipts (``eth_getBlockReceipts``) name every
  transaction's recipient and outcome; only the transactions sent to our addresses are then
  read by hash, for their value. Deposits are a sliver of a block's transactions, so this
  reads far less: on anvil a block with all its transactions costs the node ~0.33 ms of CPU
  per transaction, its receipts ~0.03 ms (docs/benchmarks.md).
* ``blocks``: the blocks with all their transactions, then the receipts of those sent to our
  addresses. For nodes without ``eth_getBlockReceipts``; a reader that is told the method
  does not exist switches to this by itself.

What comes back is checked before anyone trusts it: each block's parent hash must be the
previous block's hash, and every log, receipt and transaction must name the hash of the block
we hold at its height. A reorg that lands between two of our requests therefore shows as
``ChainMoved`` instead of a mixed answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import structlog
from eth_utils.crypto import keccak

from depositd.chain.rpc import EvmRpc, RpcCallFailed
from depositd.errors import DepositdError

log = structlog.get_logger("depositd.chain")

#: how native coin transfers are found (see the module's docstring)
NativeReads = Literal["receipts", "blocks"]

#: JSON-RPC error codes for a method the node does not offer (JSON-RPC 2.0, EIP-1474)
_NO_SUCH_METHOD = (-32601, -32004)

#: topic 0 of ``Transfer(address indexed from, address indexed to, uint256 value)``
TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()


class ChainMoved(DepositdError):
    """The node's chain changed while we read it (a reorg mid-read): read again."""


@dataclass(frozen=True)
class NativeTx:
    """A top-level transaction's native value movement."""

    hash: str
    #: lower-case hex; None for contract creation
    to: str | None
    value: int
    #: the block it is in when read by hash (None: read as part of its block)
    block_hash: str | None = None


@dataclass(frozen=True)
class Receipt:
    tx_hash: str
    block_hash: str
    block_number: int
    succeeded: bool
    #: the transaction's recipient, lower-case; None for contract creation
    to: str | None = None


@dataclass(frozen=True)
class Block:
    number: int
    hash: str
    parent_hash: str
    #: None when read without transactions
    transactions: tuple[NativeTx, ...] | None = None
    #: the receipts of all its transactions, when read with them
    receipts: tuple[Receipt, ...] | None = None


@dataclass(frozen=True)
class TransferLog:
    """One ERC-20 ``Transfer`` log, as the node reported it."""

    #: the contract that emitted the log (lower-case)
    contract: str
    sender: str
    recipient: str
    value: int
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int


@dataclass(frozen=True)
class ChainRange:
    """Blocks ``first..last`` (consecutive, checked to chain up) and their Transfer logs."""

    blocks: tuple[Block, ...]
    logs: tuple[TransferLog, ...]

    @property
    def first(self) -> Block:
        return self.blocks[0]

    @property
    def last(self) -> Block:
        return self.blocks[-1]


def _int(value: str) -> int:
    return int(value, 16)


# -- the node's answers, as decoded (only the fields read here; the rest is skipped) ----------


class RawTransaction(msgspec.Struct):
    # field names are the node's
    hash: str
    value: str
    to: str | None = None
    #: None while pending
    blockHash: str | None = None


class RawHeader(msgspec.Struct):
    number: str
    hash: str
    parentHash: str


class RawBlock(RawHeader):
    """A block read with its transactions."""

    transactions: list[RawTransaction] | None = None


class RawReceipt(msgspec.Struct):
    transactionHash: str
    blockHash: str
    blockNumber: str
    status: str | None = None
    to: str | None = None


class RawLog(msgspec.Struct):
    address: str
    blockNumber: str
    blockHash: str
    transactionHash: str
    logIndex: str
    topics: list[str] = []
    data: str = "0x"
    removed: bool = False


def _lower(address: str | None) -> str | None:
    return address.lower() if address else None


def to_block(raw: RawHeader) -> Block:
    transactions = None
    if isinstance(raw, RawBlock) and raw.transactions is not None:
        transactions = tuple(
            NativeTx(tx.hash, _lower(tx.to), _int(tx.value)) for tx in raw.transactions
        )
    return Block(_int(raw.number), raw.hash, raw.parentHash, transactions)


def to_transfer_log(raw: RawLog) -> TransferLog | None:
    """The log as an ERC-20 Transfer, or None if it is shaped otherwise.

    ERC-721 uses the same event signature with the token id as a third indexed topic; such
    logs (and any other malformed ones) are not fungible transfers.
    """
    topics, data = raw.topics, raw.data
    if len(topics) != 3 or topics[0] != TRANSFER_TOPIC or len(data) != 66 or raw.removed:
        return None
    return TransferLog(
        contract=raw.address.lower(),
        sender="0x" + topics[1][-40:].lower(),
        recipient="0x" + topics[2][-40:].lower(),
        value=_int(data),
        block_number=_int(raw.blockNumber),
        block_hash=raw.blockHash,
        tx_hash=raw.transactionHash,
        log_index=_int(raw.logIndex),
    )


def to_receipt(raw: RawReceipt) -> Receipt:
    return Receipt(
        tx_hash=raw.transactionHash,
        block_hash=raw.blockHash,
        block_number=_int(raw.blockNumber),
        succeeded=raw.status == "0x1",
        to=_lower(raw.to),
    )


def to_transaction(raw: RawTransaction) -> NativeTx | None:
    """A transaction read by hash, with the block it is in; None while pending."""
    if raw.blockHash is None:
        return None
    return NativeTx(raw.hash, _lower(raw.to), _int(raw.value), raw.blockHash)


def parse_block(raw: dict[str, Any]) -> Block:
    """A block as plain JSON (with, without or with the hashes of its transactions)."""
    txs = raw.get("transactions")
    if txs and not isinstance(txs[0], dict):
        raw = {**raw, "transactions": None}
    return to_block(msgspec.convert(raw, RawBlock))


def parse_transfer_log(raw: dict[str, Any]) -> TransferLog | None:
    return to_transfer_log(msgspec.convert(raw, RawLog))


class ChainReader:
    """Batched reads of one node: heads, ranges, receipts."""

    def __init__(
        self,
        rpc: EvmRpc,
        *,
        batch_size: int = 50,
        concurrency: int = 4,
        native_reads: NativeReads = "receipts",
    ) -> None:
        self.rpc = rpc
        self.native_reads: NativeReads = native_reads
        self._batch_size = batch_size
        self._slots = asyncio.Semaphore(concurrency)

    async def _batches(
        self, calls: Sequence[tuple[str, Sequence[Any]]], result: Any = Any
    ) -> list[Any]:
        async def one(chunk: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
            async with self._slots:
                return await self.rpc.batch(chunk, result)

        size = self._batch_size
        chunks = [calls[i : i + size] for i in range(0, len(calls), size)]
        answers = await asyncio.gather(*(one(chunk) for chunk in chunks))
        return [result for answer in answers for result in answer]

    async def head_and_block(self, number: int | None) -> tuple[int, Block | None]:
        """The head's number and (in the same round trip) the header at ``number``."""
        if number is None:
            return await self.rpc.block_number(), None
        head, raw = await self.rpc.batch(
            [("eth_blockNumber", []), ("eth_getBlockByNumber", [hex(number), False])]
        )
        return _int(head), parse_block(raw) if raw else None

    async def headers(self, numbers: Sequence[int]) -> list[Block | None]:
        answers = await self._batches(
            [("eth_getBlockByNumber", [hex(n), False]) for n in numbers], RawHeader
        )
        return [to_block(raw) if raw else None for raw in answers]

    async def read_range(
        self,
        first: int,
        last: int,
        *,
        contracts: Collection[str],
        native: bool,
        parent_hash: str | None,
    ) -> ChainRange:
        """Blocks ``first..last`` and the Transfer logs of ``contracts`` in them; with
        ``native``, also the blocks' transactions or receipts (``native_reads``).

        ``parent_hash`` is the hash we hold for block ``first - 1``: the range must continue
        it. Raises ``ChainMoved`` if the answers do not form one chain.
        """
        reads = self.native_reads if native else None
        try:
            return await self._read_range(first, last, contracts, reads, parent_hash)
        except RpcCallFailed as exc:
            if exc.method != "eth_getBlockReceipts" or exc.code not in _NO_SUCH_METHOD:
                raise
            log.warning(
                "no_block_receipts", detail="the node lacks eth_getBlockReceipts: reading"
                " blocks with all their transactions instead (slower)", error=str(exc)
            )  # fmt: skip
            self.native_reads = "blocks"
            return await self._read_range(first, last, contracts, "blocks", parent_hash)

    async def _read_range(
        self,
        first: int,
        last: int,
        contracts: Collection[str],
        reads: NativeReads | None,
        parent_hash: str | None,
    ) -> ChainRange:
        numbers = [hex(n) for n in range(first, last + 1)]
        reading: list[Awaitable[list[Any]]] = [
            self._batches(
                [("eth_getBlockByNumber", [n, reads == "blocks"]) for n in numbers],
                RawBlock if reads == "blocks" else RawHeader,
            )
        ]
        if reads == "receipts":
            calls = [("eth_getBlockReceipts", [n]) for n in numbers]
            reading.append(self._batches(calls, list[RawReceipt]))
        if contracts:
            # one request of its own: a big answer must not hold up a batch of blocks
            log_filter = {
                "fromBlock": hex(first),
                "toBlock": hex(last),
                "address": sorted(contracts),
                "topics": [TRANSFER_TOPIC],
            }
            reading.append(self.rpc.batch([("eth_getLogs", [log_filter])], list[RawLog]))
        raw_blocks, *more = await asyncio.gather(*reading)
        raw_receipts = more.pop(0) if reads == "receipts" else None
        raw_logs = more.pop(0)[0] if contracts else []
        if any(raw is None for raw in raw_blocks):
            raise ChainMoved(f"blocks {first}..{last} are not all there (the head moved back)")
        blocks = tuple(to_block(raw) for raw in raw_blocks)
        if raw_receipts is not None:
            blocks = tuple(map(_with_receipts, blocks, raw_receipts))
        expected = parent_hash
        for block in blocks:
            if expected is not None and block.parent_hash != expected:
                raise ChainMoved(f"block {block.number} does not extend the chain we read")
            expected = block.hash
        by_number = {block.number: block.hash for block in blocks}
        logs = []
        for raw in raw_logs or ():
            log = to_transfer_log(raw)
            if log is None:
                continue
            if by_number.get(log.block_number) != log.block_hash:
                raise ChainMoved(f"a log of block {log.block_number} names another block")
            logs.append(log)
        return ChainRange(blocks, tuple(logs))

    async def receipts(self, tx_hashes: Sequence[str]) -> list[Receipt | None]:
        answers = await self._batches(
            [("eth_getTransactionReceipt", [tx_hash]) for tx_hash in tx_hashes], RawReceipt
        )
        return [to_receipt(raw) if raw else None for raw in answers]

    async def transactions(self, tx_hashes: Sequence[str]) -> list[NativeTx | None]:
        """Transactions by hash; None for one the node does not know (or holds pending)."""
        answers = await self._batches(
            [("eth_getTransactionByHash", [tx_hash]) for tx_hash in tx_hashes], RawTransaction
        )
        return [to_transaction(raw) if raw else None for raw in answers]


def _with_receipts(block: Block, raw_receipts: list[RawReceipt] | None) -> Block:
    if raw_receipts is None:
        raise ChainMoved(f"block {block.number} has no receipts (the head moved back)")
    receipts = tuple(map(to_receipt, raw_receipts))
    if any(receipt.block_hash != block.hash for receipt in receipts):
        raise ChainMoved(f"a receipt of block {block.number} names another block")
    return Block(block.number, block.hash, block.parent_hash, receipts=receipts)
