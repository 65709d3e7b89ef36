"""Deposit orders: EIP-681 payment URIs, and how an order's deposits decide its status."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from depositd.domain.assets import Asset
from depositd.domain.deposits import DepositStatus
from depositd.domain.orders import (
    AttributedDeposit,
    DepositOrder,
    OrderMethod,
    OrderStatus,
    Payment,
    is_fully_paid,
    order_progress,
    payment_uri,
)

S = DepositStatus
ETH = Asset("ETH", "anvil", "ETH", 18, min_deposit=10**15, confirmations=3)
USDT = Asset(
    "USDT",
    "anvil",
    "USDT",
    6,
    min_deposit=10**6,
    confirmations=3,
    contract="0x5fbdb2315678afecb367f032d93f642f64180aa3",
)
# anvil's first account, lower case as stored and checksummed as shown
ADDRESS = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
CHECKSUMMED = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
TOKEN_CHECKSUMMED = "0x5FbDB2315678afecb367f032d93F642f64180aa3"

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
DEADLINE = T0 + timedelta(hours=1)


def test_native_coin_uri_asks_for_wei_at_the_deposit_address() -> None:
    uri = payment_uri(ETH, 31337, ADDRESS, 15 * 10**17)
    assert uri == f"ethereum:{CHECKSUMMED}@31337?value=1500000000000000000"


def test_native_coin_uri_without_amount_leaves_it_to_the_payer() -> None:
    assert payment_uri(ETH, 1, ADDRESS, None) == f"ethereum:{CHECKSUMMED}@1"


def test_token_uri_calls_transfer_on_the_token_contract() -> None:
    uri = payment_uri(USDT, 31337, ADDRESS, 25_500_000)
    assert uri == (
        f"ethereum:{TOKEN_CHECKSUMMED}@31337/transfer?address={CHECKSUMMED}&uint256=25500000"
    )


def test_token_uri_without_amount_names_only_the_beneficiary() -> None:
    uri = payment_uri(USDT, 31337, ADDRESS, None)
    assert uri == f"ethereum:{TOKEN_CHECKSUMMED}@31337/transfer?address={CHECKSUMMED}"


def test_uri_amounts_stay_exact_up_to_uint256() -> None:
    assert payment_uri(ETH, 1, ADDRESS, 2**256 - 1).endswith(f"?value={2**256 - 1}")


def order(amount: int | None = 100, *, expired: bool = False) -> DepositOrder:
    return DepositOrder(
        id="ord_1",
        merchant_id="mer_1",
        user_id="usr_1",
        user_external_id="alice",
        method=OrderMethod.CRYPTO,
        asset="USDT",
        chain="anvil",
        address=ADDRESS,
        amount=amount,
        expires_at=DEADLINE,
        expired_at=DEADLINE if expired else None,
        created_at=T0,
    )


_deposit_numbers = itertools.count(1)


def deposit(
    amount: int, status: DepositStatus = S.CREDITED, seen: datetime = T0 + timedelta(minutes=5)
) -> AttributedDeposit:
    return AttributedDeposit(f"dep_{next(_deposit_numbers):04}", amount, status, seen)


BEFORE = T0 + timedelta(minutes=10)
AFTER = DEADLINE + timedelta(minutes=10)


@pytest.mark.parametrize(
    ("amount", "deposits", "now", "status"),
    [
        (100, [], BEFORE, OrderStatus.AWAITING_PAYMENT),
        (100, [], DEADLINE, OrderStatus.EXPIRED),
        (100, [(100, S.PENDING)], BEFORE, OrderStatus.CONFIRMING),
        (100, [(100, S.CONFIRMING)], AFTER, OrderStatus.CONFIRMING),
        (100, [(100, S.HELD)], BEFORE, OrderStatus.CONFIRMING),
        (100, [(100, S.CREDITED)], BEFORE, OrderStatus.PAID),
        (100, [(60, S.CREDITED), (40, S.CREDITED)], AFTER, OrderStatus.PAID),
        (100, [(60, S.CREDITED)], BEFORE, OrderStatus.UNDERPAID),
        (100, [(60, S.CREDITED), (40, S.CONFIRMING)], BEFORE, OrderStatus.UNDERPAID),
        (100, [(60, S.CREDITED)], AFTER, OrderStatus.UNDERPAID),
        (100, [(150, S.CREDITED)], BEFORE, OrderStatus.OVERPAID),
        (None, [], BEFORE, OrderStatus.AWAITING_PAYMENT),
        (None, [(1, S.CREDITED)], BEFORE, OrderStatus.PAID),
        (None, [(10**30, S.CREDITED)], AFTER, OrderStatus.PAID),
        (None, [(5, S.CONFIRMING)], BEFORE, OrderStatus.CONFIRMING),
        # deposits that will never be credited count for nothing
        (100, [(100, S.REJECTED), (100, S.FAILED)], BEFORE, OrderStatus.AWAITING_PAYMENT),
        (100, [(100, S.ORPHANED), (100, S.REVERSED)], AFTER, OrderStatus.EXPIRED),
        (100, [(100, S.REVERSED), (100, S.CREDITED)], AFTER, OrderStatus.PAID),
    ],
)
def test_status_follows_what_was_credited_and_what_is_coming(
    amount: int | None,
    deposits: list[tuple[int, DepositStatus]],
    now: datetime,
    status: OrderStatus,
) -> None:
    progress = order_progress(order(amount), [deposit(a, s) for a, s in deposits], now)
    assert progress.status is status
    assert len(progress.deposits) == len(deposits)


def test_totals_count_credited_and_incoming_apart() -> None:
    found = [
        deposit(10, S.CREDITED),
        deposit(20, S.CREDITED),
        deposit(3, S.PENDING),
        deposit(4, S.CONFIRMING),
        deposit(5, S.HELD),
        deposit(1000, S.REJECTED),
        deposit(1000, S.ORPHANED),
    ]
    progress = order_progress(order(100), found, BEFORE)
    assert (progress.credited, progress.incoming) == (30, 12)


def test_a_sweeper_marked_order_is_expired_whatever_the_clock_says() -> None:
    progress = order_progress(order(100, expired=True), [], T0)
    assert progress.status is OrderStatus.EXPIRED


def test_deposits_first_seen_after_the_deadline_are_late() -> None:
    on_time = deposit(50, seen=DEADLINE)
    late = deposit(50, seen=DEADLINE + timedelta(seconds=1))
    progress = order_progress(order(100), [late, on_time], AFTER)
    assert [(p.deposit.id, p.late) for p in progress.deposits] == [
        (on_time.id, False),
        (late.id, True),
    ]
    assert progress.paid_late
    assert progress.status is OrderStatus.PAID


def test_a_late_deposit_that_never_counts_does_not_make_the_order_paid_late() -> None:
    rejected = deposit(50, S.REJECTED, seen=AFTER)
    progress = order_progress(order(100), [rejected], AFTER)
    assert progress.deposits[0].late
    assert not progress.paid_late
    assert progress.status is OrderStatus.EXPIRED


def test_an_order_paid_in_time_is_not_paid_late() -> None:
    progress = order_progress(order(100), [deposit(100)], AFTER)
    assert not progress.paid_late


@pytest.mark.parametrize(
    ("amount", "credited", "done"),
    [
        (100, 0, False),
        (100, 99, False),
        (100, 100, True),
        (100, 101, True),
        (None, 0, False),
        (None, 1, True),
    ],
)
def test_fully_paid(amount: int | None, credited: int, done: bool) -> None:
    assert is_fully_paid(amount, credited) is done


def card_order() -> DepositOrder:
    return replace(
        order(2500),
        method=OrderMethod.CARD,
        asset="USD",
        chain=None,
        address=None,
        payment=Payment("psp", "pay_1", redirect_url="https://psp.example/checkout/pay_1"),
    )


@pytest.mark.parametrize(
    ("deposits", "now", "status"),
    [
        ([(2500, S.FAILED)], BEFORE, OrderStatus.FAILED),
        ([(2500, S.FAILED)], AFTER, OrderStatus.FAILED),
        ([(2500, S.PENDING)], BEFORE, OrderStatus.CONFIRMING),
        ([(2500, S.CREDITED)], BEFORE, OrderStatus.PAID),
        ([(2500, S.FAILED), (2500, S.CREDITED)], BEFORE, OrderStatus.PAID),
        ([], AFTER, OrderStatus.EXPIRED),
    ],
)
def test_a_payment_the_provider_failed_fails_a_card_order(
    deposits: list[tuple[int, DepositStatus]], now: datetime, status: OrderStatus
) -> None:
    progress = order_progress(card_order(), [deposit(a, s) for a, s in deposits], now)
    assert progress.status is status


def test_a_failed_on_chain_deposit_leaves_a_crypto_order_open() -> None:
    # the user can send again to the same address; only a provider's payment is one-shot
    progress = order_progress(order(100), [deposit(100, S.FAILED)], BEFORE)
    assert progress.status is OrderStatus.AWAITING_PAYMENT
