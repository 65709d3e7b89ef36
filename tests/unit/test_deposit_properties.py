"""Properties of the deposit state machine under any sequence of observations of one deposit.

Each example replays random observations of one identity (a chain transfer or a provider
payment) through the same loop the recording service runs — ``decide``, then ``first_sight``
or ``apply`` — and checks what must hold whatever the sources say, in whatever order.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from depositd.domain.assets import Asset, ConfirmationTier
from depositd.domain.deposits import (
    TRANSITIONS,
    ChainRef,
    DepositState,
    DepositStatus,
    Observation,
    Posting,
    ProviderRef,
    ProviderStatus,
    RejectReason,
    ToAddress,
    ToUser,
    apply,
    decide,
    first_sight,
)
from depositd.domain.ledger import Side, postings_for

ETHER = 10**18
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ETH = Asset(
    code="ETH",
    chain="eth",
    symbol="ETH",
    decimals=18,
    min_deposit=10**15,
    confirmations=3,
    block_time_seconds=12.0,
    tiers=(ConfirmationTier(10 * ETHER, 6),),
)
CHAIN_REF = ChainRef("eth", "0xfeed", 0)
PROVIDER_REF = ProviderRef("mer_1", "fireblocks", "fb-1")

amounts = st.sampled_from([10**14, 10**15, ETHER, 10 * ETHER])
rejections = st.one_of(st.none(), st.none(), st.none(), st.sampled_from(list(RejectReason)))


@st.composite
def chain_observations(draw: st.DrawFn, amount: int) -> Observation:
    block = draw(st.sampled_from([None, "A", "B", "C"]))
    return Observation(
        ref=CHAIN_REF,
        owner=ToAddress("eth", "0x" + "22" * 20),
        asset="ETH",
        amount=amount,
        confirmations=draw(st.integers(0, 8)),
        block_hash=block,
        block_number=None if block is None else 100 + ord(block),
        removed=draw(st.booleans()),
        rejection=draw(rejections),
    )


@st.composite
def provider_observations(draw: st.DrawFn, amount: int) -> Observation:
    return Observation(
        ref=PROVIDER_REF,
        owner=ToUser("mer_1", "alice"),
        asset="ETH",
        amount=amount,
        provider_status=draw(st.sampled_from(list(ProviderStatus))),
        confirmations=draw(st.one_of(st.none(), st.integers(0, 8))),
        rejection=draw(rejections),
    )


@st.composite
def histories(draw: st.DrawFn) -> list[Observation]:
    """Observations of one deposit: all from the chain, or all from one provider."""
    amount = draw(amounts)
    kind = draw(st.sampled_from([chain_observations, provider_observations]))
    return draw(st.lists(kind(amount), min_size=1, max_size=25))


@settings(max_examples=300, deadline=None)
@given(histories())
def test_any_observation_sequence_keeps_the_machine_and_ledger_consistent(
    history: list[Observation],
) -> None:
    deposit: DepositState | None = None
    postings: Counter[Posting] = Counter()
    ledger_keys: set[tuple[Posting, int]] = set()
    available = 0

    for tick, obs in enumerate(history):
        now = NOW + timedelta(seconds=tick)
        transition = decide(deposit, obs, ETH)
        if transition is None:
            continue
        assert transition.to_status in TRANSITIONS[transition.from_status]
        assert transition.from_status == (deposit.status if deposit else None)
        # only a credit posts a credit and only a reversal posts a reversal
        assert (transition.posting is Posting.CREDIT) == (
            transition.to_status is DepositStatus.CREDITED
        )
        assert (transition.posting is Posting.REVERSAL) == (
            transition.to_status is DepositStatus.REVERSED
        )

        if deposit is None:
            after = first_sight("dep_1", obs, "mer_1", "usr_1", "alice", transition, now)
            assert after.version == 1
        else:
            after = apply(deposit, transition, now)
            assert after.version == deposit.version + 1
            assert after.credit_generation >= deposit.credit_generation
        assert after.status is transition.to_status

        if transition.posting is not None:
            postings[transition.posting] += 1
            entries = postings_for(after, transition.posting)
            assert sum(entry.amount for entry in entries) == 0
            # the ledger's unique key: one credit and one reversal per generation
            key = (transition.posting, entries[0].generation)
            assert key not in ledger_keys
            ledger_keys.add(key)
            available += sum(e.amount for e in entries if e.account.side is Side.AVAILABLE)

        net_credits = postings[Posting.CREDIT] - postings[Posting.REVERSAL]
        assert net_credits in (0, 1)
        assert (net_credits == 1) == (after.status is DepositStatus.CREDITED)
        assert available == net_credits * after.amount
        assert after.credit_generation == postings[Posting.REVERSAL]

        # recording the very same observation again is a no-op (duplicates are idempotent)
        assert decide(after, obs, ETH) is None
        deposit = after


@settings(max_examples=200, deadline=None)
@given(histories())
def test_terminal_statuses_never_change(history: list[Observation]) -> None:
    deposit: DepositState | None = None
    for obs in history:
        transition = decide(deposit, obs, ETH)
        if deposit is not None and deposit.status in (
            DepositStatus.REJECTED,
            DepositStatus.FAILED,
        ):
            assert transition is None
        if transition is None:
            continue
        if deposit is None:
            deposit = first_sight("dep_1", obs, "mer_1", "usr_1", "alice", transition, NOW)
        else:
            deposit = apply(deposit, transition, NOW)


@settings(max_examples=200, deadline=None)
@given(histories())
def test_a_deposit_below_the_minimum_is_never_credited(history: list[Observation]) -> None:
    below = [obs for obs in history if obs.amount < ETH.min_deposit]
    deposit: DepositState | None = None
    for obs in below:
        transition = decide(deposit, obs, ETH)
        if transition is None:
            continue
        assert transition.posting is None
        if deposit is None:
            deposit = first_sight("dep_1", obs, "mer_1", "usr_1", "alice", transition, NOW)
        else:
            deposit = apply(deposit, transition, NOW)
