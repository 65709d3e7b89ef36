"""Read ranges of an EVM chain: blocks, token Transfer logs and receipts, checked to chain up.

The watcher asks for a range of blocks in as few round trips as the node allows: the blocks
(with their transactions when native coin is watched) and one ``eth_getLogs`` for the
allow-listed token contracts go out as JSON-RPC batches, several in flight at once. What comes
back is checked before anyone trusts it: each block's parent hash must be the previous block's
hash, and every log must name the hash of the block we hold at its height. A reorg that lands
between two of our requests therefore shows as ``ChainMoved`` instead of a mixed answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils.crypto import keccak

from depositd.chain.rpc import EvmRpc
from depositd.errors import DepositdError

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


@dataclass(frozen=True)
class Block:
    number: int
    hash: str
    parent_hash: str
    #: None when read without transactions
    transactions: tuple[NativeTx, ...] | None = None


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
class Receipt:
    tx_hash: str
    block_hash: str
    block_number: int
    succeeded: bool


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


def parse_block(raw: dict[str, Any]) -> Block:
    txs = raw.get("transactions")
    transactions = None
    if txs and isinstance(txs[0], dict):
        transactions = tuple(
            NativeTx(tx["hash"], tx["to"].lower() if tx.get("to") else None, _int(tx["value"]))
            for tx in txs
        )
    elif txs is not None and not txs:
        transactions = ()
    return Block(_int(raw["number"]), raw["hash"], raw["parentHash"], transactions)


def parse_transfer_log(raw: dict[str, Any]) -> TransferLog | None:
    """The log as an ERC-20 Transfer, or None if it is shaped otherwise.

    ERC-721 uses the same event signature with the token id as a third indexed topic; such
    logs (and any other malformed ones) are not fungible transfers.
    """
    topics = raw.get("topics") or []
    data = raw.get("data") or "0x"
    if len(topics) != 3 or topics[0] != TRANSFER_TOPIC or len(data) != 66 or raw.get("removed"):
        return None
    return TransferLog(
        contract=raw["address"].lower(),
        sender="0x" + topics[1][-40:].lower(),
        recipient="0x" + topics[2][-40:].lower(),
        value=_int(data),
        block_number=_int(raw["blockNumber"]),
        block_hash=raw["blockHash"],
        tx_hash=raw["transactionHash"],
        log_index=_int(raw["logIndex"]),
    )


def parse_receipt(raw: dict[str, Any]) -> Receipt:
    return Receipt(
        tx_hash=raw["transactionHash"],
        block_hash=raw["blockHash"],
        block_number=_int(raw["blockNumber"]),
        succeeded=raw.get("status") == "0x1",
    )


class ChainReader:
    """Batched reads of one node: heads, ranges, receipts."""

    def __init__(self, rpc: EvmRpc, *, batch_size: int = 50, concurrency: int = 4) -> None:
        self.rpc = rpc
        self._batch_size = batch_size
        self._slots = asyncio.Semaphore(concurrency)

    async def _batches(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        async def one(chunk: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
            async with self._slots:
                return await self.rpc.batch(chunk)

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
        answers = await self._batches([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        return [parse_block(raw) if raw else None for raw in answers]

    async def read_range(
        self,
        first: int,
        last: int,
        *,
        contracts: Collection[str],
        transactions: bool,
        parent_hash: str | None,
    ) -> ChainRange:
        """Blocks ``first..last`` and the Transfer logs of ``contracts`` in them.

        ``parent_hash`` is the hash we hold for block ``first - 1``: the range must continue
        it. Raises ``ChainMoved`` if the answers do not form one chain.
        """
        calls: list[tuple[str, Sequence[Any]]] = [
            ("eth_getBlockByNumber", [hex(n), transactions]) for n in range(first, last + 1)
        ]
        if contracts:
            # one request of its own: a big answer must not hold up a batch of blocks
            log_filter = {
                "fromBlock": hex(first),
                "toBlock": hex(last),
                "address": sorted(contracts),
                "topics": [TRANSFER_TOPIC],
            }
            raw_blocks, raw_logs = await asyncio.gather(
                self._batches(calls), self.rpc.call("eth_getLogs", log_filter)
            )
        else:
            raw_blocks, raw_logs = await self._batches(calls), []
        if any(raw is None for raw in raw_blocks):
            raise ChainMoved(f"blocks {first}..{last} are not all there (the head moved back)")
        blocks = tuple(parse_block(raw) for raw in raw_blocks)
        expected = parent_hash
        for block in blocks:
            if expected is not None and block.parent_hash != expected:
                raise ChainMoved(f"block {block.number} does not extend the chain we read")
            expected = block.hash
        by_number = {block.number: block.hash for block in blocks}
        logs = []
        for raw in raw_logs or ():
            log = parse_transfer_log(raw)
            if log is None:
                continue
            if by_number.get(log.block_number) != log.block_hash:
                raise ChainMoved(f"a log of block {log.block_number} names another block")
            logs.append(log)
        return ChainRange(blocks, tuple(logs))

    async def receipts(self, tx_hashes: Sequence[str]) -> list[Receipt | None]:
        answers = await self._batches(
            [("eth_getTransactionReceipt", [tx_hash]) for tx_hash in tx_hashes]
        )
        return [parse_receipt(raw) if raw else None for raw in answers]
