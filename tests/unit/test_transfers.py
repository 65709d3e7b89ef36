"""Finding deposits in what the node returned: parsing and the fake-deposit rules, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from depositd.chain.evm import (
    TRANSFER_TOPIC,
    Block,
    ChainMoved,
    ChainRange,
    ChainReader,
    NativeTx,
    Receipt,
    parse_block,
    parse_transfer_log,
)
from depositd.chain.rpc import RpcCallFailed
from depositd.chain.transfers import find_transfers
from depositd.domain.assets import Asset
from depositd.domain.deposits import RejectReason

OURS = "0x" + "aa" * 20
OTHER = "0x" + "bb" * 20
TOKEN = "0x" + "cc" * 20
COPYCAT = "0x" + "dd" * 20
ETH = Asset("ETH", "evm", "ETH", 18, 1, 3)
USDT = Asset("USDT", "evm", "USDT", 6, 1, 3, contract=TOKEN)


def raw_log(**changes: Any) -> dict[str, Any]:
    log = {
        "address": TOKEN,
        "topics": [TRANSFER_TOPIC, "0x" + "00" * 12 + OTHER[2:], "0x" + "00" * 12 + OURS[2:]],
        "data": "0x" + f"{5_000_000:064x}",
        "blockNumber": "0xa",
        "blockHash": "0xb10c",
        "transactionHash": "0x7a",
        "logIndex": "0x3",
    }
    log.update(changes)
    return log


def test_a_transfer_log_is_read_with_its_place_in_the_chain() -> None:
    log = parse_transfer_log(raw_log())
    assert log is not None
    assert (log.contract, log.sender, log.recipient, log.value) == (TOKEN, OTHER, OURS, 5_000_000)
    assert (log.block_number, log.block_hash, log.tx_hash, log.log_index) == (
        10,
        "0xb10c",
        "0x7a",
        3,
    )


@pytest.mark.parametrize(
    "changes",
    [
        # ERC-721: the same event signature, the token id as a third indexed topic
        {"topics": [TRANSFER_TOPIC, "0x" + "00" * 32, "0x" + "00" * 32, "0x" + "00" * 31 + "07"]},
        {"data": "0x"},
        {"topics": ["0x" + "11" * 32, "0x" + "00" * 32, "0x" + "00" * 32]},
        {"removed": True},
    ],
)
def test_logs_that_are_not_fungible_transfers_are_skipped(changes: dict[str, Any]) -> None:
    assert parse_transfer_log(raw_log(**changes)) is None


def test_a_block_with_transactions_keeps_native_value_and_recipient() -> None:
    block = parse_block(
        {
            "number": "0x10",
            "hash": "0xh",
            "parentHash": "0xp",
            "transactions": [
                {"hash": "0x1", "to": OURS.upper().replace("0X", "0x"), "value": "0x64"},
                {"hash": "0x2", "to": None, "value": "0x0"},
            ],
        }
    )
    assert block.transactions == (NativeTx("0x1", OURS, 100), NativeTx("0x2", None, 0))


def chain_range(*txs: NativeTx, logs: tuple[dict[str, Any], ...] = ()) -> ChainRange:
    parsed = tuple(log for raw in logs if (log := parse_transfer_log(raw)) is not None)
    return ChainRange((Block(10, "0xb10c", "0xp", txs),), parsed)


def test_native_deposits_count_only_with_a_successful_receipt() -> None:
    found = find_transfers(
        "evm",
        chain_range(NativeTx("0x1", OURS, 7), NativeTx("0x2", OURS, 9), NativeTx("0x3", OTHER, 1)),
        {OURS},
        {TOKEN: USDT},
        ETH,
        {
            "0x1": Receipt("0x1", "0xb10c", 10, succeeded=True),
            "0x2": Receipt("0x2", "0xb10c", 10, succeeded=False),
        },
    )
    assert [(t.ref.tx_hash, t.amount, t.rejection) for t in found] == [
        ("0x1", 7, None),
        ("0x2", 9, RejectReason.TRANSACTION_FAILED),
    ]


def test_a_receipt_from_another_block_means_the_chain_moved() -> None:
    with pytest.raises(ChainMoved):
        find_transfers(
            "evm",
            chain_range(NativeTx("0x1", OURS, 7)),
            {OURS},
            {},
            ETH,
            {"0x1": Receipt("0x1", "0xother", 10, succeeded=True)},
        )


def test_only_allow_listed_contracts_to_our_addresses_with_value_count() -> None:
    logs = (
        raw_log(),
        raw_log(address=COPYCAT, logIndex="0x4"),
        raw_log(data="0x" + "00" * 32, logIndex="0x5"),
        raw_log(topics=[TRANSFER_TOPIC, "0x" + "00" * 32, "0x" + "00" * 12 + OTHER[2:]]),
    )
    found = find_transfers("evm", chain_range(logs=logs), {OURS}, {TOKEN: USDT}, None, {})
    assert [(t.asset, t.amount, t.ref.log_index) for t in found] == [("USDT", 5_000_000, 3)]


def test_without_a_native_asset_native_value_is_not_read() -> None:
    found = find_transfers("evm", chain_range(NativeTx("0x1", OURS, 7)), {OURS}, {}, None, {})
    assert found == []


def read_with_receipts(*receipts: Receipt) -> ChainRange:
    return ChainRange((Block(10, "0xb10c", "0xp", receipts=receipts),), ())


def test_read_with_receipts_the_transactions_to_our_addresses_give_the_value() -> None:
    found = find_transfers(
        "evm",
        read_with_receipts(
            Receipt("0x1", "0xb10c", 10, succeeded=True, to=OURS),
            Receipt("0x2", "0xb10c", 10, succeeded=False, to=OURS),
            Receipt("0x3", "0xb10c", 10, succeeded=True, to=OURS),
            Receipt("0x4", "0xb10c", 10, succeeded=True, to=OTHER),
        ),
        {OURS},
        {},
        ETH,
        {},
        {
            "0x1": NativeTx("0x1", OURS, 7, "0xb10c"),
            "0x2": NativeTx("0x2", OURS, 9, "0xb10c"),
            # zero value: address poisoning, not a deposit
            "0x3": NativeTx("0x3", OURS, 0, "0xb10c"),
        },
    )
    assert [(t.ref.tx_hash, t.amount, t.rejection) for t in found] == [
        ("0x1", 7, None),
        ("0x2", 9, RejectReason.TRANSACTION_FAILED),
    ]


@pytest.mark.parametrize("transactions", [{}, {"0x1": NativeTx("0x1", OURS, 7, "0xother")}])
def test_a_transaction_missing_or_from_another_block_means_the_chain_moved(
    transactions: dict[str, NativeTx],
) -> None:
    with pytest.raises(ChainMoved):
        find_transfers(
            "evm",
            read_with_receipts(Receipt("0x1", "0xb10c", 10, succeeded=True, to=OURS)),
            {OURS},
            {},
            ETH,
            {},
            transactions,
        )


class NoBlockReceipts:
    """A node without eth_getBlockReceipts: answers blocks with their transactions."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]], result: Any) -> list[Any]:
        self.methods += [method for method, _ in calls]
        if any(method == "eth_getBlockReceipts" for method, _ in calls):
            raise RpcCallFailed("eth_getBlockReceipts", -32601, "the method does not exist")
        return [
            msgspec.convert(
                {
                    "number": params[0],
                    "hash": f"0xh{params[0]}",
                    "parentHash": f"0xh{hex(int(params[0], 16) - 1)}",
                    "transactions": [{"hash": "0x1", "to": OURS, "value": "0x7"}],
                },
                result,
            )
            for _, params in calls
        ]


async def test_a_node_without_block_receipts_is_read_block_by_block_with_transactions() -> None:
    node = NoBlockReceipts()
    reader = ChainReader(node, native_reads="receipts")  # type: ignore[arg-type]
    found = await reader.read_range(5, 6, contracts=(), native=True, parent_hash="0xh0x4")
    assert reader.native_reads == "blocks"
    assert [b.transactions for b in found.blocks] == [(NativeTx("0x1", OURS, 7),)] * 2
    # from then on it asks for the blocks alone
    node.methods.clear()
    await reader.read_range(7, 7, contracts=(), native=True, parent_hash="0xh0x6")
    assert node.methods == ["eth_getBlockByNumber"]
