"""Check what a provider claims happened on chain against our own node (trust, but verify).

A custody provider's callback may say "25.5 USDT reached alice's address in tx 0xab…". On a
chain we also watch, that claim is credited only once our node shows the same transfer: the
transaction succeeded (receipt ``status == 1``); for a token, a ``Transfer`` log emitted by
the asset's own contract to the claimed recipient for exactly the claimed amount; for native
coin, the top-level transaction's recipient and value; and enough blocks on top of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from depositd.chain.evm import RawLog, RawTransaction, to_transfer_log
from depositd.chain.rpc import EvmRpc
from depositd.domain.assets import Asset
from depositd.domain.messages import Message


class _RawReceipt(msgspec.Struct):
    blockHash: str
    blockNumber: str
    status: str | None = None
    logs: list[RawLog] = []


@dataclass(frozen=True)
class ChainEvidence:
    """What our node shows of a claimed transfer."""

    #: why the chain contradicts the claim (a hint for the held deposit), or None
    contradiction: Message | None
    #: blocks mined on top of the transaction's block (when it is in one)
    confirmations: int = 0
    block_number: int | None = None
    block_hash: str | None = None


async def look_up_claim(
    rpc: EvmRpc, asset: Asset, tx_hash: str, recipient: str, amount: int
) -> ChainEvidence:
    """Read the transaction, its receipt and the head in one batch, and judge the claim."""
    head, receipt, tx = await rpc.batch(
        [
            ("eth_blockNumber", []),
            ("eth_getTransactionReceipt", [tx_hash]),
            ("eth_getTransactionByHash", [tx_hash]),
        ]
    )
    return judge_claim(asset, recipient, amount, int(head, 16), receipt, tx)


def judge_claim(
    asset: Asset,
    recipient: str,
    amount: int,
    head: int,
    receipt: dict[str, Any] | None,
    tx: dict[str, Any] | None,
) -> ChainEvidence:
    """Whether the node's answers (plain JSON) show ``amount`` of ``asset`` reaching
    ``recipient``; pure, for tests without a node."""
    if receipt is None or tx is None:
        return ChainEvidence(Message("held_claim_not_on_chain"))
    found = msgspec.convert(receipt, _RawReceipt)
    number = int(found.blockNumber, 16)

    def evidence(contradiction: str | None) -> ChainEvidence:
        return ChainEvidence(
            Message(contradiction) if contradiction is not None else None,
            confirmations=max(head - number, 0),
            block_number=number,
            block_hash=found.blockHash,
        )

    if found.status != "0x1":
        return evidence("held_claim_failed_on_chain")
    recipient = recipient.lower()
    if asset.contract is None:
        sent = msgspec.convert(tx, RawTransaction)
        shown = (sent.to or "").lower() == recipient and int(sent.value, 16) == amount
    else:
        logs = (to_transfer_log(log) for log in found.logs)
        shown = any(
            log is not None
            and log.contract == asset.contract
            and log.recipient == recipient
            and log.value == amount
            for log in logs
        )
    return evidence(None if shown else "held_claim_not_on_chain")
