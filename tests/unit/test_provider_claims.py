"""What a provider's callback claims (the payload mapping), and how our node's answers judge a
claimed on-chain transfer — pure functions, no I/O."""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from typing import Any

import pytest

from depositd.chain.claims import judge_claim
from depositd.chain.evm import TRANSFER_TOPIC
from depositd.config import PayloadMapping
from depositd.domain.assets import Asset, AssetBook
from depositd.domain.deposits import ProviderStatus
from depositd.providers.mapping import MAX_FIELD_CHARS, PayloadRejected, read_claim, resolve
from depositd.services.callbacks import IpNetwork, client_address

TOKEN = "0x" + "77" * 20
USER_ADDRESS = "0x" + "ab" * 20
ETH = Asset("ETH", "eth", "ETH", 18, 10**15, 3, block_time_seconds=12.0)
USDT = Asset("USDT", "eth", "USDT", 6, 10**6, 3, contract=TOKEN, block_time_seconds=12.0)
ASSETS = AssetBook([ETH, USDT])
MAPPING = PayloadMapping(
    event_id="/event/id",
    deposit_id="/data/id",
    user="/data/user",
    asset="/data/coin",
    amount="/data/amount",
    status="/data/state",
    confirmations="/data/confirmations",
    tx_hash="/data/tx",
    assets={"usdt-erc20": "USDT"},
    statuses={"CONFIRMED": ProviderStatus.SUCCEEDED, "WAITING": ProviderStatus.PENDING},
)


def body(**data: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "id": "d-1",
        "user": "alice",
        "coin": "usdt-erc20",
        "amount": Decimal("25.50"),
        "state": "CONFIRMED",
        "confirmations": 7,
        "tx": "0x" + "cd" * 32,
    }
    fields.update(data)
    return {"event": {"id": "e-1"}, "data": {k: v for k, v in fields.items() if v is not None}}


def test_a_claim_is_read_in_our_terms() -> None:
    claim = read_claim(MAPPING, ASSETS, body(), None)
    assert (claim.event_id, claim.deposit_id, claim.user) == ("e-1", "d-1", "alice")
    assert (claim.asset, claim.amount, claim.status) == ("USDT", 25_500_000, "succeeded")
    assert (claim.confirmations, claim.tx_hash) == (7, "0x" + "cd" * 32)


def test_base_units_and_numbers_as_text_are_read_exactly() -> None:
    mapping = MAPPING.model_copy(update={"amount_unit": "base"})
    big = 2**200
    claim = read_claim(mapping, ASSETS, body(amount=str(big)), None)
    assert claim.amount == big
    with pytest.raises(PayloadRejected) as caught:
        read_claim(mapping, ASSETS, body(amount="25.5"), None)
    assert caught.value.code == "amount_invalid"


def test_without_an_event_id_pointer_the_message_id_or_the_deposit_and_status_stand_in() -> None:
    mapping = MAPPING.model_copy(update={"event_id": None})
    assert read_claim(mapping, ASSETS, body(), "msg_9").event_id == "msg_9"
    assert read_claim(mapping, ASSETS, body(), None).event_id == "d-1:CONFIRMED"


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"id": None}, "field_missing"),
        ({"user": ""}, "field_missing"),
        ({"user": {"nested": 1}}, "field_invalid"),
        ({"user": True}, "field_invalid"),
        ({"user": "x" * (MAX_FIELD_CHARS + 1)}, "field_invalid"),
        ({"state": "MAYBE"}, "status_unknown"),
        ({"coin": "doge"}, "asset_unknown"),
        ({"amount": "-1"}, "amount_invalid"),
        ({"amount": "0"}, "amount_invalid"),
        ({"amount": "1e3"}, "amount_invalid"),
        ({"amount": "0.0000001"}, "amount_invalid"),
        ({"confirmations": "many"}, "field_invalid"),
    ],
)
def test_a_payload_the_mapping_cannot_read_is_refused_with_a_code(
    changes: dict[str, Any], code: str
) -> None:
    with pytest.raises(PayloadRejected) as caught:
        read_claim(MAPPING, ASSETS, body(**changes), None)
    assert caught.value.code == code
    assert str(caught.value)


def test_json_pointers_follow_rfc_6901() -> None:
    document = {"a/b": {"m~n": [10, 20]}, "": 1}
    assert resolve(document, "/a~1b/m~0n/1") == 20
    assert resolve(document, "/") == 1
    # whatever is missing resolves to the same marker, which no JSON value is
    missing = resolve(document, "/nope")
    assert resolve(document, "/a~1b/m~0n/2") is missing
    assert missing not in (None, 0, "", [], {})


# -- judging a claimed transfer by our node's answers ---------------------------------------


def receipt(status: str = "0x1", logs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"blockHash": "0x" + "b1" * 32, "blockNumber": hex(100), "status": status,
            "logs": logs or []}  # fmt: skip


def transfer_log(contract: str = TOKEN, to: str = USER_ADDRESS, value: int = 25_500_000) -> Any:
    return {
        "address": contract,
        "blockNumber": hex(100),
        "blockHash": "0x" + "b1" * 32,
        "transactionHash": "0x" + "cd" * 32,
        "logIndex": "0x0",
        "topics": [TRANSFER_TOPIC, "0x" + "00" * 12 + "11" * 20, "0x" + "00" * 12 + to[2:]],
        "data": "0x" + f"{value:064x}",
    }


def tx(to: str = USER_ADDRESS, value: int = 10**18) -> dict[str, Any]:
    return {"hash": "0x" + "cd" * 32, "to": to, "value": hex(value), "blockHash": "0x" + "b1" * 32}


def test_a_token_transfer_the_node_shows_is_confirmed_with_its_confirmations() -> None:
    mixed_case = "0x" + "AB" * 20  # a checksummed address names the same account
    found = judge_claim(USDT, mixed_case, 25_500_000, 104, receipt(logs=[transfer_log()]),
                        tx(to=TOKEN, value=0))  # fmt: skip
    assert (found.contradiction, found.confirmations, found.block_number) == (None, 4, 100)


@pytest.mark.parametrize(
    ("logs", "why"),
    [
        ([transfer_log(contract="0x" + "99" * 20)], "a look-alike contract's log"),
        ([transfer_log(to="0x" + "12" * 20)], "to someone else"),
        ([transfer_log(value=1)], "another amount"),
        ([], "no Transfer log at all"),
    ],
)
def test_a_token_claim_the_node_does_not_show_is_contradicted(
    logs: list[dict[str, Any]], why: str
) -> None:
    found = judge_claim(USDT, USER_ADDRESS, 25_500_000, 104, receipt(logs=logs), tx(TOKEN, 0))
    assert found.contradiction is not None, why
    assert found.contradiction.code == "held_claim_not_on_chain"


def test_native_coin_claims_are_judged_by_the_transaction() -> None:
    shown = judge_claim(ETH, USER_ADDRESS, 10**18, 100, receipt(), tx())
    assert (shown.contradiction, shown.confirmations) == (None, 0)
    other_amount = judge_claim(ETH, USER_ADDRESS, 2 * 10**18, 100, receipt(), tx())
    assert other_amount.contradiction is not None


def test_a_failed_or_unknown_transaction_is_a_contradiction() -> None:
    failed = judge_claim(ETH, USER_ADDRESS, 10**18, 110, receipt(status="0x0"), tx())
    assert failed.contradiction is not None
    assert failed.contradiction.code == "held_claim_failed_on_chain"
    unknown = judge_claim(ETH, USER_ADDRESS, 10**18, 110, None, None)
    assert unknown.contradiction is not None
    assert unknown.contradiction.code == "held_claim_not_on_chain"


# -- the source address behind proxies ------------------------------------------------------


def networks(*cidrs: str) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


def test_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    proxies = networks("10.0.0.0/8")
    forwarded = {"x-forwarded-for": "203.0.113.7, 10.1.1.1"}
    assert client_address("10.0.0.2", forwarded, proxies) == "203.0.113.7"
    assert client_address("198.51.100.4", forwarded, proxies) == "198.51.100.4"
    assert client_address("10.0.0.2", forwarded, ()) == "10.0.0.2"
    assert client_address("10.0.0.2", {}, proxies) == "10.0.0.2"
    # a client cannot hide behind a chain of made-up proxies: the last untrusted hop counts
    spoofed = {"x-forwarded-for": "1.2.3.4, 203.0.113.7"}
    assert client_address("10.0.0.2", spoofed, proxies) == "203.0.113.7"
