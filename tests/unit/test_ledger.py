"""Ledger postings: a credit and its reversal are balanced entries keyed by generation."""

from __future__ import annotations

from datetime import UTC, datetime

from depositd.domain.assets import Asset
from depositd.domain.deposits import (
    ChainRef,
    DepositState,
    DepositStatus,
    Observation,
    Posting,
    ToAddress,
    apply,
    decide,
    first_sight,
)
from depositd.domain.ledger import Account, Entry, Side, postings_for

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
AMOUNT = 25 * 10**5  # 2.5 USDT
USDT = Asset(
    code="USDT",
    chain="eth",
    symbol="USDT",
    decimals=6,
    min_deposit=10**6,
    confirmations=2,
    contract="0xdac17f958d2ee523a2206206994597c13d831ec7",
)


def _seen(confirmations: int, block: str, *, removed: bool = False) -> Observation:
    return Observation(
        ref=ChainRef("eth", "0xbeef", 7),
        owner=ToAddress("eth", "0x" + "33" * 20),
        asset="USDT",
        amount=AMOUNT,
        confirmations=confirmations,
        block_hash=block,
        removed=removed,
    )


def _credited() -> DepositState:
    obs = _seen(2, "A")
    transition = decide(None, obs, USDT)
    assert transition is not None
    return first_sight("dep_1", obs, "mer_1", "usr_1", "alice", transition, NOW)


def _next(deposit: DepositState, obs: Observation) -> tuple[DepositState, Posting]:
    transition = decide(deposit, obs, USDT)
    assert transition is not None
    assert transition.posting is not None
    return apply(deposit, transition, NOW), transition.posting


AVAILABLE = Account("mer_1", "usr_1", "USDT", Side.AVAILABLE)
EXTERNAL = Account("mer_1", None, "USDT", Side.EXTERNAL)


def test_a_credit_moves_the_amount_from_external_to_the_users_available_side() -> None:
    deposit = _credited()
    assert deposit.status is DepositStatus.CREDITED
    entries = postings_for(deposit, Posting.CREDIT)
    assert entries == [
        Entry(EXTERNAL, -AMOUNT, Posting.CREDIT, 0),
        Entry(AVAILABLE, AMOUNT, Posting.CREDIT, 0),
    ]
    assert sum(entry.amount for entry in entries) == 0


def test_a_reversal_takes_the_same_credit_back() -> None:
    reversed_, posting = _next(_credited(), _seen(2, "A", removed=True))
    assert posting is Posting.REVERSAL
    assert reversed_.credit_generation == 1
    entries = postings_for(reversed_, posting)
    # the reversal belongs to generation 0, the credit it compensates
    assert entries == [
        Entry(EXTERNAL, AMOUNT, Posting.REVERSAL, 0),
        Entry(AVAILABLE, -AMOUNT, Posting.REVERSAL, 0),
    ]
    assert sum(entry.amount for entry in entries) == 0


def test_a_credit_after_a_reversal_is_a_new_generation() -> None:
    deposit = _credited()
    lines = postings_for(deposit, Posting.CREDIT)
    for block in ("B", "C"):
        deposit, posting = _next(deposit, _seen(2, deposit.block_hash or "", removed=True))
        lines += postings_for(deposit, posting)
        deposit, posting = _next(deposit, _seen(2, block))
        lines += postings_for(deposit, posting)

    assert deposit.status is DepositStatus.CREDITED
    assert [(e.kind, e.generation) for e in lines if e.account == AVAILABLE] == [
        (Posting.CREDIT, 0),
        (Posting.REVERSAL, 0),
        (Posting.CREDIT, 1),
        (Posting.REVERSAL, 1),
        (Posting.CREDIT, 2),
    ]
    # a balance is the sum of its entries: credited once, net
    assert sum(e.amount for e in lines if e.account == AVAILABLE) == AMOUNT
    assert sum(e.amount for e in lines if e.account == EXTERNAL) == -AMOUNT
    assert sum(e.amount for e in lines) == 0


def test_account_keys_name_the_owner_asset_and_side() -> None:
    assert AVAILABLE.key == "user:usr_1:USDT:available"
    assert Account("mer_1", "usr_1", "USDT", Side.LOCKED).key == "user:usr_1:USDT:locked"
    assert EXTERNAL.key == "merchant:mer_1:USDT:external"
