"""Screening a credit before it is posted: KYC limits, then anomaly detection.

The state machine decides that a deposit is to be credited; screening may turn that credit
into a hold, with the reason, for an operator to approve or reject. Both checks read their
state once per recording batch, in the recording transaction, with the batch's users locked
(PostgreSQL), so concurrent credits of one user are screened one after the other:

* KYC limits (``domain.limits``): what the user had credited within the window, by level.
* Anomaly detection (``domain.anomaly``), for assets with ``[assets.anomaly]``: the user's
  recent deposits of the asset and the asset's recent first deposits. Every credit screened
  joins the user's history — held ones too, as a burst is made of deposits that may each be
  held — once per deposit; the batch saves the histories it changed before its postings.

Assets with neither cost nothing: the state machine's decision stands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from depositd.db.recording import RecordingStore, Screening
from depositd.db.repositories import Owner
from depositd.domain import deposits as machine
from depositd.domain.anomaly import Detector, Finding, FirstDeposits, UserHistory
from depositd.domain.assets import LIMIT_WINDOW, Asset, AssetBook
from depositd.domain.deposits import DepositState, Observation
from depositd.domain.limits import LimitCheck
from depositd.domain.messages import Message
from depositd.domain.money import format_amount

#: finding parameters that are amounts in base units, shown in whole units in the hint
_AMOUNTS = ("amount", "median", "limit", "absolute_limit")


@dataclass
class Screen:
    assets: AssetBook
    now: datetime
    limits: LimitCheck | None = None
    screening: Screening | None = None
    _detectors: dict[str, Detector] = field(default_factory=dict)
    _histories: dict[tuple[str, str], UserHistory] = field(default_factory=dict)
    #: deposits already screened in this batch (a raced first sighting is decided twice)
    _screened: set[str] = field(default_factory=set)

    def decide(
        self, current: DepositState | None, obs: Observation, owner: Owner
    ) -> machine.Transition | None:
        asset = self.assets[obs.asset]
        transition = machine.decide(current, obs, asset)
        if transition is None or transition.posting is not machine.Posting.CREDIT:
            return transition
        hold = None
        if self.limits is not None and asset.kyc_limits:
            hold = self.limits.hold(owner.user_id, asset, obs.amount)
        if asset.anomaly is not None and obs.ref.key not in self._screened:
            self._screened.add(obs.ref.key)
            at = current.created_at if current is not None else self.now
            finding = self._assess(asset, owner.user_id, obs.amount, at)
            hold = hold or (None if finding is None else _message(finding, asset))
        if hold is None:
            return transition
        return machine.decide(current, replace(obs, hold=hold), asset)

    def _assess(self, asset: Asset, user_id: str, amount: int, at: datetime) -> Finding | None:
        """Judge the credit against the user's history, then add it to the history."""
        assert self.screening is not None
        assert asset.anomaly is not None
        state = self.screening
        detector = self._detectors.get(asset.code)
        if detector is None:
            stored = state.first.get(asset.code)
            first = FirstDeposits() if stored is None else FirstDeposits.from_json(stored)
            detector = self._detectors[asset.code] = Detector(asset.anomaly, first)
        key = (user_id, asset.code)
        history = self._histories.get(key)
        if history is None:
            stored_history = state.histories.get(key)
            history = (
                UserHistory() if stored_history is None else UserHistory.from_json(stored_history)
            )
            self._histories[key] = history
        limit = asset.anomaly_threshold
        if limit is None and asset.kyc_limits:
            limit = asset.kyc_limit(state.levels.get(user_id, 0))
        finding = detector.assess(history, amount, at, limit)
        first_ever = history.seen == 0
        detector.observe(history, amount, at)
        state.histories[key] = history.to_json()
        state.changed_histories.add(key)
        if first_ever:
            state.first[asset.code] = detector.first_deposits.to_json()
            state.changed_first.add(asset.code)
        return finding

    async def save(self, store: RecordingStore) -> None:
        if self.screening is not None:
            await store.save_screening(self.screening, self.now)


async def screen(
    store: RecordingStore,
    assets: AssetBook,
    observations: Sequence[Observation],
    owners: Sequence[Owner],
    now: datetime,
) -> Screen:
    """The batch's screen, its state read (and its users locked) once."""
    found = Screen(assets, now)
    limited = {o.asset for o in observations if assets[o.asset].kyc_limits}
    watched = {o.asset for o in observations if assets[o.asset].anomaly is not None}
    if limited:
        users = {owner.user_id for owner, o in zip(owners, observations, strict=True)
                 if o.asset in limited}  # fmt: skip
        found.limits = await store.limit_check(users, limited, now - LIMIT_WINDOW)
    if watched:
        users = {owner.user_id for owner, o in zip(owners, observations, strict=True)
                 if o.asset in watched}  # fmt: skip
        found.screening = await store.screening(users, watched)
    return found


def _message(finding: Finding, asset: Asset) -> Message:
    params = {
        name: format_amount(value, asset.decimals) if name in _AMOUNTS else value
        for name, value in finding.params.items()
    }
    params["symbol"] = asset.symbol
    code = finding.code
    if code == "anomaly_first_large" and "absolute_limit" in finding.params:
        code = "anomaly_first_over"  # the fixed threshold, not a comparison with others
    return Message(code, params)
