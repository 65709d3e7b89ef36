"""Which value in a range of blocks reached our addresses, and which of it may count.

Pure functions over what ``chain.evm`` read. The fake-deposit defences (假充值) live here:

* a token counts only through a ``Transfer`` log *emitted by* an allow-listed contract — the
  log's own address, which no other contract can forge. Copycat tokens with the same name,
  symbol and decimals, and contracts that emit look-alike Transfer events, are never read;
* a token whose ``transfer`` returns false without reverting emits no log: nothing to count;
  reverted transactions leave no logs at all;
* native coin counts only from a top-level transaction whose receipt says ``status == 1``; a
  failed one is reported as rejected, so the user sees why nothing was credited;
* zero-value transfers (address-poisoning spam) are not deposits.

Native coin moved by internal calls (a contract sending to our address) is not detected: it
needs execution traces, which many nodes do not serve. Platforms should tell users to deposit
native coin from a plain transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from depositd.chain.evm import Block, ChainMoved, ChainRange, NativeTx, Receipt
from depositd.domain.assets import Asset
from depositd.domain.deposits import ChainRef, RejectReason


@dataclass(frozen=True)
class Transfer:
    """Value that reached one of our addresses in one block."""

    ref: ChainRef
    #: our deposit address (lower-case)
    address: str
    asset: str
    amount: int
    block_number: int
    block_hash: str
    #: set when the transfer is known not to count (the user is told why)
    rejection: RejectReason | None = None


@dataclass(frozen=True)
class NativeCandidate:
    """A top-level transaction that may have sent native coin to a watched address, with
    what its block was read with: its transaction or its receipt; the other one is needed."""

    block: Block
    tx_hash: str
    tx: NativeTx | None = None
    receipt: Receipt | None = None


def native_candidates(
    blocks: Sequence[Block], watched: Collection[str], native: Asset | None
) -> list[NativeCandidate]:
    """Top-level transactions to a watched address: those with value from blocks read with
    their transactions, every one from blocks read with their receipts (value unknown)."""
    if native is None:
        return []
    found = []
    for block in blocks:
        if block.receipts is not None:
            found += [
                NativeCandidate(block, r.tx_hash, receipt=r)
                for r in block.receipts
                if r.to is not None and r.to in watched
            ]
        else:
            found += [
                NativeCandidate(block, tx.hash, tx=tx)
                for tx in block.transactions or ()
                if tx.value > 0 and tx.to is not None and tx.to in watched
            ]
    return found


def find_transfers(
    chain: str,
    chain_range: ChainRange,
    watched: Collection[str],
    tokens: Mapping[str, Asset],
    native: Asset | None,
    receipts: Mapping[str, Receipt],
    transactions: Mapping[str, NativeTx] | None = None,
) -> list[Transfer]:
    """Deposits to ``watched`` in the range, in chain order.

    ``tokens`` maps allow-listed contract addresses (lower-case) to their asset. ``receipts``
    and ``transactions`` hold what the range's blocks lack of each native candidate (read by
    hash); one from another block means the chain moved under us (``ChainMoved``).
    """
    found: list[tuple[int, int, Transfer]] = []
    for candidate in native_candidates(chain_range.blocks, watched, native):
        assert native is not None
        block = candidate.block
        receipt = candidate.receipt or receipts.get(candidate.tx_hash)
        if receipt is None or receipt.block_hash != block.hash:
            raise ChainMoved(f"the receipt of {candidate.tx_hash} is not in block {block.number}")
        tx = candidate.tx or (transactions or {}).get(candidate.tx_hash)
        if tx is None or tx.block_hash not in (None, block.hash):
            raise ChainMoved(f"transaction {candidate.tx_hash} is not in block {block.number}")
        if tx.value == 0 or tx.to is None or tx.to not in watched:
            continue  # zero-value spam (address poisoning) is not a deposit
        transfer = Transfer(
            ref=ChainRef(chain, tx.hash),
            address=tx.to,
            asset=native.code,
            amount=tx.value,
            block_number=block.number,
            block_hash=block.hash,
            rejection=None if receipt.succeeded else RejectReason.TRANSACTION_FAILED,
        )
        found.append((block.number, -1, transfer))
    for log in chain_range.logs:
        asset = tokens.get(log.contract)
        if asset is None or log.recipient not in watched or log.value == 0:
            continue
        transfer = Transfer(
            ref=ChainRef(chain, log.tx_hash, log.log_index),
            address=log.recipient,
            asset=asset.code,
            amount=log.value,
            block_number=log.block_number,
            block_hash=log.block_hash,
        )
        found.append((log.block_number, log.log_index, transfer))
    found.sort(key=lambda item: (item[0], item[1]))
    return [transfer for _, _, transfer in found]
