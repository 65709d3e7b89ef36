"""The deposit state machine: what each observation does to a deposit (DESIGN §3)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

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
    Transition,
    apply,
    check_transition,
    decide,
    first_sight,
    review,
)
from depositd.domain.messages import Message
from depositd.errors import IllegalTransition, InputError, ObservationConflict

S = DepositStatus
ETHER = 10**18
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

ETH = Asset(
    code="ETH",
    chain="eth",
    symbol="ETH",
    decimals=18,
    min_deposit=10**15,  # 0.001 ETH
    confirmations=3,
    block_time_seconds=12.0,
    tiers=(ConfirmationTier(10 * ETHER, 6), ConfirmationTier(100 * ETHER, 12)),
)
CHAIN_REF = ChainRef("eth", "0xABC123", 2)
ADDRESS = ToAddress("eth", "0x" + "11" * 20)
PROVIDER_REF = ProviderRef("mer_1", "fireblocks", "fb-42")
USER = ToUser("mer_1", "alice")


def chain(
    confirmations: int = 0,
    block: str | None = None,
    *,
    removed: bool = False,
    amount: int = ETHER,
    asset: str = "ETH",
    rejection: RejectReason | None = None,
) -> Observation:
    """A chain watcher's observation; ``block`` names the block hash (None: mempool)."""
    return Observation(
        ref=CHAIN_REF,
        owner=ADDRESS,
        asset=asset,
        amount=amount,
        confirmations=confirmations,
        block_hash=block,
        block_number=None if block is None else 100 + ord(block[0]),
        removed=removed,
        rejection=rejection,
    )


def provider(
    status: ProviderStatus,
    confirmations: int | None = None,
    *,
    amount: int = ETHER,
    rejection: RejectReason | None = None,
) -> Observation:
    """An upstream provider's callback about its payment."""
    return Observation(
        ref=PROVIDER_REF,
        owner=USER,
        asset="ETH",
        amount=amount,
        provider_status=status,
        confirmations=confirmations,
        rejection=rejection,
    )


def see(obs: Observation, asset: Asset = ETH) -> DepositState:
    """The deposit after its first observation."""
    transition = decide(None, obs, asset)
    assert transition is not None
    return first_sight("dep_1", obs, "mer_1", "usr_1", "alice", transition, NOW)


def step(deposit: DepositState, obs: Observation, asset: Asset = ETH) -> DepositState:
    """The deposit after an observation that must change it."""
    transition = decide(deposit, obs, asset)
    assert transition is not None, f"{obs} changed nothing on a {deposit.status} deposit"
    return apply(deposit, transition, NOW + timedelta(seconds=deposit.version))


def run(*observations: Observation) -> DepositState:
    """The deposit after a series of observations, each of which must change it."""
    deposit = see(observations[0])
    for obs in observations[1:]:
        deposit = step(deposit, obs)
    return deposit


# -- first sight --------------------------------------------------------------------------


def test_first_sight_in_the_mempool_is_pending() -> None:
    obs = chain(0)
    transition = decide(None, obs, ETH)
    assert transition is not None
    assert transition.from_status is None
    assert transition.to_status is S.PENDING
    assert transition.posting is None
    assert transition.reason == Message("awaiting_first_confirmation", {"required": 3})

    deposit = first_sight("dep_1", obs, "mer_1", "usr_1", "alice", transition, NOW)
    assert deposit.status is S.PENDING
    assert deposit.version == 1
    assert deposit.credit_generation == 0
    assert deposit.confirmations == 0
    assert deposit.required_confirmations == 3
    assert deposit.tx_hash == "0xABC123"
    assert deposit.block_hash is None
    assert (deposit.amount, deposit.asset) == (ETHER, "ETH")
    assert (deposit.merchant_id, deposit.user_id, deposit.user_external_id) == (
        "mer_1",
        "usr_1",
        "alice",
    )
    assert deposit.created_at == deposit.updated_at == NOW


def test_first_sight_with_some_confirmations_is_confirming_with_a_hint() -> None:
    transition = decide(None, chain(1, "A"), ETH)
    assert transition is not None
    assert transition.to_status is S.CONFIRMING
    assert transition.posting is None
    assert transition.confirmations == 1
    assert transition.block_hash == "A"
    # 2 more blocks of 12 s each
    assert transition.reason == Message(
        "awaiting_confirmations", {"remaining": 2, "eta_seconds": 24}
    )
    assert transition.reason.render() == "Waiting for 2 more confirmations, about 24 s."


def test_eta_uses_the_assets_block_time() -> None:
    fast = dataclasses.replace(ETH, block_time_seconds=1.5, confirmations=10, tiers=())
    transition = decide(None, chain(3, "A"), fast)
    assert transition is not None
    assert transition.reason.params == {"remaining": 7, "eta_seconds": 10}  # round(10.5)


@pytest.mark.parametrize("confirmations", [3, 4, 50])
def test_first_sight_with_enough_confirmations_is_credited(confirmations: int) -> None:
    transition = decide(None, chain(confirmations, "A"), ETH)
    assert transition is not None
    assert transition.to_status is S.CREDITED
    assert transition.posting is Posting.CREDIT
    assert transition.reason == Message("confirmed", {"confirmations": confirmations})
    assert see(chain(confirmations, "A")).credit_generation == 0


def test_an_asset_needing_no_confirmations_credits_from_the_mempool() -> None:
    instant = dataclasses.replace(ETH, confirmations=0, tiers=())
    assert see(chain(0), instant).status is S.CREDITED


@pytest.mark.parametrize(
    ("amount", "required"),
    [(ETHER, 3), (10 * ETHER, 6), (99 * ETHER, 6), (100 * ETHER, 12)],
)
def test_required_confirmations_follow_the_amount_tier(amount: int, required: int) -> None:
    deposit = see(chain(1, "A", amount=amount))
    assert deposit.required_confirmations == required
    assert deposit.reason.params["remaining"] == required - 1

    almost = decide(deposit, chain(required - 1, "A", amount=amount), ETH)
    assert almost is not None
    assert almost.to_status is S.CONFIRMING
    done = decide(deposit, chain(required, "A", amount=amount), ETH)
    assert done is not None
    assert done.to_status is S.CREDITED


def test_required_confirmations_are_fixed_when_first_seen() -> None:
    deposit = see(chain(1, "A"))
    stricter = dataclasses.replace(ETH, confirmations=30, tiers=())
    transition = decide(deposit, chain(3, "A"), stricter)
    assert transition is not None
    assert transition.to_status is S.CREDITED


def test_below_minimum_is_rejected_with_a_hint() -> None:
    transition = decide(None, chain(5, "A", amount=10**15 - 1), ETH)
    assert transition is not None
    assert transition.to_status is S.REJECTED
    assert transition.posting is None
    assert transition.reason == Message("below_minimum", {"minimum": "0.001", "symbol": "ETH"})
    assert transition.reason.render() == "Sent below the 0.001 ETH minimum; not credited."


def test_exactly_the_minimum_is_accepted() -> None:
    assert see(chain(5, "A", amount=10**15)).status is S.CREDITED


def test_below_minimum_from_a_provider_is_rejected_too() -> None:
    transition = decide(None, provider(ProviderStatus.SUCCEEDED, amount=1), ETH)
    assert transition is not None
    assert transition.to_status is S.REJECTED
    assert transition.reason.code == "below_minimum"


@pytest.mark.parametrize("reason", list(RejectReason))
def test_a_rejection_reason_rejects_on_first_sight(reason: RejectReason) -> None:
    transition = decide(None, chain(10, "A", rejection=reason), ETH)
    assert transition is not None
    assert transition.to_status is S.REJECTED
    assert transition.posting is None
    assert transition.reason == Message(reason.value)


@pytest.mark.parametrize("earlier", [chain(0), chain(1, "A")])
def test_a_rejection_reason_rejects_a_deposit_in_progress(earlier: Observation) -> None:
    deposit = see(earlier)
    transition = decide(deposit, chain(2, "B", rejection=RejectReason.FAKE_TRANSFER), ETH)
    assert transition is not None
    assert transition.to_status is S.REJECTED


def test_a_provider_claim_the_chain_does_not_show_is_rejected() -> None:
    obs = provider(ProviderStatus.SUCCEEDED, rejection=RejectReason.CLAIM_NOT_ON_CHAIN)
    deposit = see(obs)
    assert deposit.status is S.REJECTED
    assert deposit.reason.code == "claim_not_on_chain"


def test_rejected_is_final() -> None:
    deposit = see(chain(1, "A", rejection=RejectReason.TOKEN_NOT_ACCEPTED))
    assert decide(deposit, chain(20, "A"), ETH) is None
    assert decide(deposit, chain(20, "B"), ETH) is None
    assert decide(deposit, chain(1, "A", removed=True), ETH) is None


# -- progress, duplicates and stale observations --------------------------------------------


def test_mempool_then_blocks_then_credit() -> None:
    deposit = run(chain(0), chain(1, "A"), chain(2, "A"), chain(3, "A"))
    assert deposit.status is S.CREDITED
    assert deposit.version == 4
    assert deposit.confirmations == 3
    assert deposit.block_hash == "A"
    assert deposit.updated_at > deposit.created_at


def test_more_confirmations_is_progress_with_a_fresh_hint() -> None:
    deposit = see(chain(1, "A"))
    transition = decide(deposit, chain(2, "A"), ETH)
    assert transition is not None
    assert (transition.from_status, transition.to_status) == (S.CONFIRMING, S.CONFIRMING)
    assert transition.reason.params == {"remaining": 1, "eta_seconds": 12}


@pytest.mark.parametrize(
    "history",
    [
        [chain(0)],
        [chain(1, "A")],
        [chain(0), chain(2, "A")],
        [chain(3, "A")],
        [chain(1, "A"), chain(5, "A")],
    ],
)
def test_a_duplicate_observation_changes_nothing(history: list[Observation]) -> None:
    deposit = run(*history)
    assert decide(deposit, history[-1], ETH) is None


@pytest.mark.parametrize("stale", [chain(0), chain(1, "A"), chain(2, "A")])
def test_fewer_or_equal_confirmations_in_the_same_block_are_stale(stale: Observation) -> None:
    deposit = run(chain(0), chain(2, "A"))
    assert decide(deposit, stale, ETH) is None


def test_more_confirmations_after_credit_change_nothing() -> None:
    deposit = see(chain(3, "A"))
    assert decide(deposit, chain(4, "A"), ETH) is None
    assert decide(deposit, chain(100, "A"), ETH) is None


def test_the_mempool_again_after_a_block_changes_nothing() -> None:
    # leaving a block is reported as a removal; a late mempool sighting is just old news
    deposit = see(chain(1, "A"))
    assert decide(deposit, chain(0), ETH) is None


def test_moving_to_another_block_with_fewer_confirmations_is_news() -> None:
    deposit = see(chain(2, "A"))
    transition = decide(deposit, chain(1, "B"), ETH)
    assert transition is not None
    assert transition.to_status is S.CONFIRMING
    assert transition.block_hash == "B"
    assert transition.confirmations == 1


@pytest.mark.parametrize("before", [chain(0), chain(0, "A"), chain(2, "A")])
def test_moving_into_the_newest_block_is_pending_again_in_that_block(
    before: Observation,
) -> None:
    deposit = see(before)
    transition = decide(deposit, chain(0, "B"), ETH)
    assert transition is not None
    assert transition.to_status is S.PENDING
    assert (transition.block_hash, transition.confirmations) == ("B", 0)


# -- reorgs ----------------------------------------------------------------------------------


def test_removal_of_a_pending_deposit_orphans_it() -> None:
    deposit = step(see(chain(0)), chain(0, removed=True))
    assert deposit.status is S.ORPHANED
    assert deposit.reason == Message("removed_by_reorg")


def test_removal_of_a_confirming_deposit_orphans_it_and_keeps_its_block() -> None:
    deposit = see(chain(2, "A"))
    transition = decide(deposit, chain(2, "A", removed=True), ETH)
    assert transition is not None
    assert (transition.from_status, transition.to_status) == (S.CONFIRMING, S.ORPHANED)
    assert transition.posting is None
    assert transition.confirmations == 0
    assert transition.block_hash == "A"  # so a replay of that block is recognised
    assert transition.block_number == deposit.block_number
    assert transition.reason == Message("removed_by_reorg")


def test_removal_without_a_block_hash_orphans_whatever_block_it_was_in() -> None:
    deposit = step(see(chain(2, "A")), chain(0, removed=True))
    assert deposit.status is S.ORPHANED


def test_removal_of_a_credited_deposit_reverses_the_credit() -> None:
    credited = see(chain(3, "A"))
    transition = decide(credited, chain(3, "A", removed=True), ETH)
    assert transition is not None
    assert (transition.from_status, transition.to_status) == (S.CREDITED, S.REVERSED)
    assert transition.posting is Posting.REVERSAL
    assert transition.reason == Message("reversed_by_reorg")

    reversed_ = apply(credited, transition, NOW)
    assert reversed_.status is S.REVERSED
    assert reversed_.credit_generation == credited.credit_generation + 1
    assert reversed_.version == credited.version + 1
    assert reversed_.block_hash == "A"


def test_removal_of_an_unseen_deposit_changes_nothing() -> None:
    assert decide(None, chain(2, "A", removed=True), ETH) is None


@pytest.mark.parametrize(
    "history",
    [
        [chain(1, "A"), chain(2, "B")],  # now in B: a late removal of A is stale
        [chain(1, "A"), chain(3, "B")],  # credited in B
        [chain(0)],  # still in the mempool: it was never in A
    ],
)
def test_removal_of_a_block_the_deposit_is_no_longer_in_changes_nothing(
    history: list[Observation],
) -> None:
    deposit = run(*history)
    assert decide(deposit, chain(1, "A", removed=True), ETH) is None


@pytest.mark.parametrize(
    "history",
    [
        [chain(2, "A"), chain(2, "A", removed=True)],
        [chain(3, "A"), chain(3, "A", removed=True)],
    ],
)
def test_a_second_removal_changes_nothing(history: list[Observation]) -> None:
    deposit = run(*history)
    assert deposit.status in (S.ORPHANED, S.REVERSED)
    assert decide(deposit, history[-1], ETH) is None
    assert decide(deposit, chain(0, removed=True), ETH) is None


def test_orphaned_deposit_mined_again_in_another_block_comes_back() -> None:
    orphaned = run(chain(2, "A"), chain(2, "A", removed=True))
    confirming = step(orphaned, chain(1, "B"))
    assert confirming.status is S.CONFIRMING
    assert confirming.block_hash == "B"
    credited = step(confirming, chain(3, "B"))
    assert credited.status is S.CREDITED
    assert credited.credit_generation == 0


def test_orphaned_deposit_mined_again_with_enough_confirmations_is_credited() -> None:
    orphaned = run(chain(2, "A"), chain(2, "A", removed=True))
    transition = decide(orphaned, chain(5, "B"), ETH)
    assert transition is not None
    assert (transition.from_status, transition.to_status) == (S.ORPHANED, S.CREDITED)
    assert transition.posting is Posting.CREDIT


def test_orphaned_deposit_back_in_the_mempool_is_pending() -> None:
    orphaned = run(chain(2, "A"), chain(2, "A", removed=True))
    assert step(orphaned, chain(0)).status is S.PENDING


def test_reversed_deposit_mined_again_is_credited_again_in_a_new_generation() -> None:
    reversed_ = run(chain(3, "A"), chain(3, "A", removed=True))
    transition = decide(reversed_, chain(3, "B"), ETH)
    assert transition is not None
    assert (transition.from_status, transition.to_status) == (S.REVERSED, S.CREDITED)
    assert transition.posting is Posting.CREDIT
    recredited = apply(reversed_, transition, NOW)
    assert recredited.credit_generation == 1
    assert recredited.block_hash == "B"


def test_reversed_deposit_mined_again_with_few_confirmations_is_confirming() -> None:
    reversed_ = run(chain(3, "A"), chain(3, "A", removed=True))
    assert step(reversed_, chain(1, "B")).status is S.CONFIRMING


@pytest.mark.parametrize(
    "history",
    [
        [chain(2, "A"), chain(2, "A", removed=True)],
        [chain(3, "A"), chain(3, "A", removed=True)],
    ],
)
@pytest.mark.parametrize("confirmations", [1, 2, 3, 10])
def test_a_replay_of_the_removed_block_changes_nothing(
    history: list[Observation], confirmations: int
) -> None:
    deposit = run(*history)
    assert decide(deposit, chain(confirmations, "A"), ETH) is None


def test_a_rejection_after_a_reversal_changes_nothing() -> None:
    # the credit is already taken back; nothing more to say
    reversed_ = run(chain(3, "A"), chain(3, "A", removed=True))
    assert decide(reversed_, chain(3, "B", rejection=RejectReason.FAKE_TRANSFER), ETH) is None


def test_a_rejection_of_an_orphaned_deposit_rejects_it() -> None:
    orphaned = run(chain(2, "A"), chain(2, "A", removed=True))
    transition = decide(orphaned, chain(1, "B", rejection=RejectReason.TRANSACTION_FAILED), ETH)
    assert transition is not None
    assert transition.to_status is S.REJECTED


def test_credit_reorg_credit_reorg_alternates_generations() -> None:
    deposit = run(
        chain(3, "A"),
        chain(3, "A", removed=True),
        chain(3, "B"),
        chain(3, "B", removed=True),
        chain(3, "C"),
    )
    assert deposit.status is S.CREDITED
    assert deposit.credit_generation == 2
    assert deposit.version == 5


# -- provider statuses -------------------------------------------------------------------------


def test_provider_pending_is_pending() -> None:
    deposit = see(provider(ProviderStatus.PENDING))
    assert deposit.status is S.PENDING
    assert deposit.tx_hash is None
    assert deposit.reason == Message("provider_pending", {"provider": "fireblocks"})


def test_provider_confirming_reports_the_providers_count() -> None:
    deposit = see(provider(ProviderStatus.CONFIRMING, 1))
    assert deposit.status is S.CONFIRMING
    assert deposit.confirmations == 1
    assert deposit.reason.render("en") == (
        "fireblocks reports the payment on its way; confirmations so far: 1."
    )


def test_provider_confirming_without_a_count_is_confirming() -> None:
    deposit = see(provider(ProviderStatus.CONFIRMING))
    assert deposit.status is S.CONFIRMING
    assert deposit.confirmations == 0


def test_provider_succeeded_is_credited() -> None:
    transition = decide(None, provider(ProviderStatus.SUCCEEDED), ETH)
    assert transition is not None
    assert transition.to_status is S.CREDITED
    assert transition.posting is Posting.CREDIT
    assert transition.reason == Message("provider_confirmed", {"provider": "fireblocks"})


@pytest.mark.parametrize("status", [ProviderStatus.FAILED, ProviderStatus.REVERSED])
def test_provider_failure_before_credit_is_failed(status: ProviderStatus) -> None:
    for earlier in (None, see(provider(ProviderStatus.PENDING))):
        transition = decide(earlier, provider(status), ETH)
        assert transition is not None
        assert transition.to_status is S.FAILED
        assert transition.posting is None
        assert transition.reason == Message("provider_failed", {"provider": "fireblocks"})


def test_provider_lifecycle_pending_confirming_succeeded() -> None:
    deposit = run(
        provider(ProviderStatus.PENDING),
        provider(ProviderStatus.CONFIRMING, 1),
        provider(ProviderStatus.CONFIRMING, 2),
        provider(ProviderStatus.SUCCEEDED),
    )
    assert deposit.status is S.CREDITED
    assert deposit.version == 4


def test_provider_duplicates_change_nothing() -> None:
    pending = see(provider(ProviderStatus.PENDING))
    assert decide(pending, provider(ProviderStatus.PENDING), ETH) is None

    confirming = step(pending, provider(ProviderStatus.CONFIRMING, 2))
    assert decide(confirming, provider(ProviderStatus.CONFIRMING, 2), ETH) is None
    assert decide(confirming, provider(ProviderStatus.CONFIRMING, 1), ETH) is None
    assert decide(confirming, provider(ProviderStatus.PENDING), ETH) is None

    credited = step(confirming, provider(ProviderStatus.SUCCEEDED))
    assert decide(credited, provider(ProviderStatus.SUCCEEDED), ETH) is None
    assert decide(credited, provider(ProviderStatus.PENDING), ETH) is None
    assert decide(credited, provider(ProviderStatus.CONFIRMING, 9), ETH) is None


@pytest.mark.parametrize("status", [ProviderStatus.REVERSED, ProviderStatus.FAILED])
def test_provider_reversal_after_credit_reverses_the_credit(status: ProviderStatus) -> None:
    credited = see(provider(ProviderStatus.SUCCEEDED))
    transition = decide(credited, provider(status), ETH)
    assert transition is not None
    assert (transition.from_status, transition.to_status) == (S.CREDITED, S.REVERSED)
    assert transition.posting is Posting.REVERSAL
    assert transition.reason == Message("provider_reversed", {"provider": "fireblocks"})

    reversed_ = apply(credited, transition, NOW)
    assert reversed_.credit_generation == 1
    assert decide(reversed_, provider(ProviderStatus.REVERSED), ETH) is None
    assert decide(reversed_, provider(ProviderStatus.FAILED), ETH) is None


def test_provider_failed_is_final() -> None:
    failed = see(provider(ProviderStatus.FAILED))
    assert failed.status is S.FAILED
    for status in ProviderStatus:
        assert decide(failed, provider(status, 50), ETH) is None


@pytest.mark.parametrize(
    "late",
    [
        provider(ProviderStatus.SUCCEEDED),
        provider(ProviderStatus.CONFIRMING, 1),
        provider(ProviderStatus.PENDING),
    ],
)
def test_a_late_provider_callback_after_a_provider_reversal_changes_nothing(
    late: Observation,
) -> None:
    reversed_ = run(provider(ProviderStatus.SUCCEEDED), provider(ProviderStatus.REVERSED))
    assert reversed_.status is S.REVERSED
    assert decide(reversed_, late, ETH) is None


# -- conflicts and illegal transitions ---------------------------------------------------------


@pytest.mark.parametrize(
    "contradiction",
    [chain(3, "A", amount=2 * ETHER), chain(3, "A", asset="WETH")],
)
def test_an_observation_contradicting_the_record_is_a_conflict(
    contradiction: Observation,
) -> None:
    deposit = see(chain(1, "A"))
    with pytest.raises(ObservationConflict, match=deposit.id) as caught:
        decide(deposit, contradiction, ETH)
    assert isinstance(caught.value, InputError)


def test_a_conflict_is_raised_even_for_a_removal() -> None:
    deposit = see(chain(3, "A"))
    with pytest.raises(ObservationConflict):
        decide(deposit, chain(3, "A", removed=True, amount=ETHER + 1), ETH)


def test_check_transition_refuses_credited_back_to_pending() -> None:
    with pytest.raises(IllegalTransition, match="credited to pending"):
        check_transition(S.CREDITED, S.PENDING)


ALL_PAIRS = [(a, b) for a in [None, *DepositStatus] for b in DepositStatus]


@pytest.mark.parametrize(("from_status", "to_status"), ALL_PAIRS)
def test_check_transition_follows_the_table(
    from_status: DepositStatus | None, to_status: DepositStatus
) -> None:
    if to_status in TRANSITIONS[from_status]:
        check_transition(from_status, to_status)
    else:
        with pytest.raises(IllegalTransition):
            check_transition(from_status, to_status)


def test_the_table_matches_the_design() -> None:
    assert set(TRANSITIONS) == {None, *DepositStatus}
    assert TRANSITIONS[S.REJECTED] == frozenset()
    assert TRANSITIONS[S.FAILED] == frozenset()
    assert TRANSITIONS[S.CREDITED] == {S.REVERSED}
    # a hold takes the place of a credit: wherever a deposit may be credited (but a review's
    # own credit), it may be held instead, and nowhere else
    for source, targets in TRANSITIONS.items():
        if source is not S.HELD:
            assert (S.HELD in targets) == (S.CREDITED in targets)
    for source in TRANSITIONS:
        assert S.REVERSED not in TRANSITIONS[source] or source is S.CREDITED


def test_an_illegal_transition_cannot_even_be_built() -> None:
    with pytest.raises(IllegalTransition):
        Transition(
            from_status=S.CREDITED,
            to_status=S.PENDING,
            confirmations=0,
            required_confirmations=3,
            reason=Message("removed_by_reorg"),
            posting=None,
            block_hash=None,
            block_number=None,
        )


def test_apply_refuses_a_transition_from_another_status() -> None:
    pending = see(chain(0))
    credited_elsewhere = decide(see(chain(1, "A")), chain(3, "A"), ETH)
    assert credited_elsewhere is not None
    with pytest.raises(IllegalTransition):
        apply(pending, credited_elsewhere, NOW)


def test_first_sight_refuses_a_transition_of_a_known_deposit() -> None:
    deposit = see(chain(1, "A"))
    transition = decide(deposit, chain(3, "A"), ETH)
    assert transition is not None
    with pytest.raises(IllegalTransition):
        first_sight("dep_2", chain(3, "A"), "mer_1", "usr_1", "alice", transition, NOW)


# -- observations and identities ---------------------------------------------------------------


@pytest.mark.parametrize("amount", [0, -1])
def test_an_observation_needs_a_positive_amount(amount: int) -> None:
    with pytest.raises(InputError, match="positive"):
        chain(1, "A", amount=amount)


def test_a_chain_observation_needs_confirmations() -> None:
    with pytest.raises(InputError, match="confirmations"):
        Observation(ref=CHAIN_REF, owner=ADDRESS, asset="ETH", amount=1)
    with pytest.raises(InputError, match="confirmations"):
        Observation(ref=CHAIN_REF, owner=ADDRESS, asset="ETH", amount=1, confirmations=-1)


def test_a_chain_observation_carries_no_provider_status() -> None:
    with pytest.raises(InputError, match="provider status"):
        Observation(
            ref=CHAIN_REF,
            owner=ADDRESS,
            asset="ETH",
            amount=1,
            confirmations=1,
            provider_status=ProviderStatus.SUCCEEDED,
        )


def test_a_provider_observation_needs_a_status_and_cannot_be_removed() -> None:
    with pytest.raises(InputError, match="provider status"):
        Observation(ref=PROVIDER_REF, owner=USER, asset="ETH", amount=1)
    with pytest.raises(InputError, match="reversed"):
        Observation(
            ref=PROVIDER_REF,
            owner=USER,
            asset="ETH",
            amount=1,
            provider_status=ProviderStatus.PENDING,
            removed=True,
        )
    with pytest.raises(InputError, match="confirmations"):
        provider(ProviderStatus.CONFIRMING, -1)


def test_identity_keys() -> None:
    assert CHAIN_REF.key == "chain:eth:0xabc123:2"
    assert ChainRef("eth", "0xABC123").key == "chain:eth:0xabc123:-1"
    assert PROVIDER_REF.key == "provider:mer_1:fireblocks:fb-42"
    assert chain(0).source == "chain:eth"
    assert provider(ProviderStatus.PENDING).source == "provider:fireblocks"


# -- holds and reviews ----------------------------------------------------------------------

HOLD = Message("held_claim_not_on_chain")


def test_a_hold_turns_the_credit_into_held_with_its_reason() -> None:
    held = see(dataclasses.replace(provider(ProviderStatus.SUCCEEDED), hold=HOLD))
    assert held.status is S.HELD
    assert held.reason == HOLD
    assert decide(None, dataclasses.replace(chain(3, "a"), hold=HOLD), ETH) is not None
    pending = see(chain(0))
    assert step(pending, dataclasses.replace(chain(3, "a"), hold=HOLD)).status is S.HELD


def test_a_hold_does_not_stop_progress_short_of_credit() -> None:
    confirming = see(dataclasses.replace(provider(ProviderStatus.CONFIRMING, 1), hold=HOLD))
    assert confirming.status is S.CONFIRMING
    failed = see(dataclasses.replace(provider(ProviderStatus.FAILED), hold=HOLD))
    assert failed.status is S.FAILED


def test_a_held_deposit_waits_for_the_reviewer_whatever_arrives() -> None:
    held = see(dataclasses.replace(provider(ProviderStatus.SUCCEEDED), hold=HOLD))
    assert decide(held, provider(ProviderStatus.SUCCEEDED), ETH) is None


@pytest.mark.parametrize(
    ("approve", "status", "posting", "reason"),
    [
        (True, S.CREDITED, Posting.CREDIT, "approved_by_reviewer"),
        (False, S.REJECTED, None, "rejected_by_reviewer"),
    ],
)
def test_a_review_settles_a_held_deposit(
    approve: bool, status: DepositStatus, posting: Posting | None, reason: str
) -> None:
    held = see(dataclasses.replace(chain(5, "a"), hold=HOLD))
    transition = review(held, approve)
    assert (transition.to_status, transition.posting, transition.reason.code) == (
        status,
        posting,
        reason,
    )
    decided = apply(held, transition, NOW)
    assert (decided.confirmations, decided.block_hash) == (held.confirmations, held.block_hash)
    with pytest.raises(IllegalTransition, match="only a held deposit"):
        review(decided, approve)
