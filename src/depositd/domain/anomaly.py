"""Anomaly detection of deposits: robust statistics over each user's recent deposits of an asset.

A deposit that looks unlike its user's habits is put on ``held`` with a reason an operator can
check at a glance, and the operator approves or rejects it. Four patterns, each a rule with
numbers that explain it (``Finding.params``):

* **anomaly_amount** — the amount is far above the user's history of this asset. On the natural
  logarithm of the amounts (deposit sizes are roughly log-normal: a user who sends 100 and 200
  is as steady as one who sends 10,000 and 20,000) we take the median and the median absolute
  deviation (MAD) of the user's last ``HISTORY_SIZE`` deposits, and the robust z-score
  ``z = (ln amount - median) / (1.4826 * b_n * MAD)``, where ``b_n`` is Croux and Rousseeuw's
  finite-sample factor (1992; 1.14 for 7 deposits, 1.02 for 50): the MAD of a few values is
  too small on average. It fires when ``z >= amount_z`` and the amount is at least
  ``amount_min_ratio`` times the user's median, once the user has ``min_history`` deposits.
  The scale has a floor (``min_log_scale``) so that a user who always sends the same amount
  (MAD 0) is not held for sending a little more once; the ratio floor says the same in plain
  terms. Only upward: a smaller deposit than usual risks nothing.
* **anomaly_burst** — more than ``burst_count`` deposits within ``burst_window`` (this one
  included), and a count that a Poisson process at the user's usual rate would reach in such
  a window with a chance of at most ``burst_chance``. The usual rate comes from the history
  before the window (so a burst does not raise its own bar), up to the window's start (so a
  long silence lowers it): a heavy user's busy hour is not a burst, a quiet user's is.
* **anomaly_structuring** — at least ``structuring_count`` deposits within
  ``structuring_window`` (this one included) each within ``structuring_margin`` below a limit
  the caller names: a KYC limit at the user's level or a reporting threshold. Splitting a sum
  so that no single deposit reaches a threshold is the classic way around it. A user whose
  amounts are usually near the limit lands there by chance, so the count must also be more
  than ``structuring_factor`` times what the log-normal of the user's own median and scale
  puts in that band (a handful of deposits far from the median barely moves median and MAD,
  so a run does not excuse itself).
* **anomaly_first_large** — the user's first deposit of the asset is at least
  ``first_absolute`` base units, or, once the asset has ``first_min_peers`` first deposits to
  compare with, its robust z-score among the asset's recent first deposits
  (``FirstDeposits``, same formula) is at least ``first_z`` and it is at least
  ``first_min_ratio`` times their median. A new account has no history of its own; the
  other newcomers are the nearest yardstick.

Why robust statistics and not a learned model (an online-learning library such as river's
half-space trees was the alternative): every hold must say why in numbers an operator can
verify ("42x your median of 120 USDT, robust z 6.1"), which a model score cannot; the rules
need no training data, which a new deployment does not have; they are deterministic, so a
replay of the same deposits holds the same ones; and median and MAD ignore the outliers in
the history they are computed from, where a mean and standard deviation would be dragged
by the very deposits we look for. The state is a bounded list per user and asset, small
enough for a JSON column, and assessing is O(``HISTORY_SIZE``).

Limits of the method: the first deposits of a burst or of a structuring run pass before the
pattern is there to see (only the later ones are held); a user with fewer than
``min_history`` deposits is compared with nothing but the first-deposit rule; a slow drift
of amounts moves the median with it and is never held.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import NormalDist
from typing import Any

#: deposits of one user and asset kept for the statistics (the oldest are dropped)
HISTORY_SIZE = 50
#: first deposits of an asset kept as the yardstick for a new user's first
FIRST_DEPOSITS_SIZE = 200
#: the MAD of a standard normal distribution is 1 / 1.4826: MAD * 1.4826 estimates sigma
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class AnomalyPolicy:
    """The thresholds of the four rules (see the module docstring); one policy per asset,
    because ``first_absolute`` is in the asset's base units."""

    #: deposits a user needs before their amounts are judged against their own history
    min_history: int = 8
    #: robust z-score on the log amount at or above which an amount is anomalous: 3.0 is
    #: about 1 in 740 of a log-normal user's ordinary deposits; 3.5 (1 in 4,300) holds fewer
    #: and finds fewer (docs/benchmarks.md)
    amount_z: float = 3.0
    #: and the amount must be at least this many times the user's median
    amount_min_ratio: float = 5.0
    #: floor of the log-amount scale (sigma), so that a user with identical amounts (MAD 0)
    #: is not flagged for a small step up; 0.3 is a factor of about 1.35
    min_log_scale: float = 0.3
    burst_window: timedelta = timedelta(hours=1)
    #: more deposits than this within ``burst_window`` is a burst ...
    burst_count: int = 4
    #: ... if a Poisson process at the user's usual rate reaches that many in a window with
    #: at most this chance (so a heavy user needs more)
    burst_chance: float = 1e-5
    structuring_window: timedelta = timedelta(days=7)
    #: this many deposits just under the limit within ``structuring_window`` is structuring
    structuring_count: int = 3
    #: "just under": at least ``limit * (1 - margin)`` and below ``limit``
    structuring_margin: float = 0.1
    #: ... and more than this many times the count that the user's own spread of amounts
    #: (median and MAD) would put just under the limit
    structuring_factor: float = 3.0
    #: a first deposit of at least this many base units is held whatever the others did
    first_absolute: int | None = None
    #: first deposits of the asset needed before a first deposit is compared with them
    first_min_peers: int = 20
    first_z: float = 3.5
    first_min_ratio: float = 10.0


@dataclass(frozen=True)
class Finding:
    """Why a deposit should be held: a stable code and the numbers behind it (JSON-safe;
    amounts in base units)."""

    #: anomaly_amount, anomaly_burst, anomaly_structuring or anomaly_first_large
    code: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class UserHistory:
    """One user's recent deposits of one asset, oldest first: what the rules compare with.

    Bounded to ``HISTORY_SIZE`` deposits, so it fits a JSON column; ``seen`` counts every
    deposit ever observed, so a user whose old deposits were dropped is still not new.
    """

    amounts: list[int] = field(default_factory=list)
    #: seconds since the epoch (UTC), parallel to ``amounts``, ascending
    times: list[float] = field(default_factory=list)
    seen: int = 0

    def observe(self, amount: int, at: datetime) -> None:
        """Add a deposit (a late one goes to its place in time) and drop the oldest beyond
        ``HISTORY_SIZE``. A zero amount says nothing about habits (and has no logarithm):
        it is not kept."""
        stamp = _seconds(at)
        if amount <= 0:
            return
        index = bisect.bisect_right(self.times, stamp)
        self.times.insert(index, stamp)
        self.amounts.insert(index, amount)
        del self.times[:-HISTORY_SIZE], self.amounts[:-HISTORY_SIZE]
        self.seen += 1

    def to_json(self) -> dict[str, Any]:
        # amounts as strings: an 18-decimal asset's base units pass 2**53, where many JSON
        # readers round
        return {"amounts": [str(a) for a in self.amounts], "times": self.times, "seen": self.seen}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UserHistory:
        return cls(
            amounts=[int(a) for a in data["amounts"]],
            times=[float(t) for t in data["times"]],
            seen=int(data["seen"]),
        )


@dataclass
class FirstDeposits:
    """The most recent first deposits of an asset (``FIRST_DEPOSITS_SIZE``), the yardstick
    for a new user's first one."""

    amounts: list[int] = field(default_factory=list)

    def observe(self, amount: int) -> None:
        self.amounts.append(amount)
        del self.amounts[:-FIRST_DEPOSITS_SIZE]

    def to_json(self) -> dict[str, Any]:
        return {"amounts": [str(a) for a in self.amounts]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FirstDeposits:
        return cls(amounts=[int(a) for a in data["amounts"]])


@dataclass(frozen=True)
class _Spread:
    """Median and scale of log amounts, and where one amount stands against them."""

    median: float
    scale: float

    @classmethod
    def of(cls, amounts: Sequence[int], min_scale: float) -> _Spread:
        logs = [math.log(a) for a in amounts]
        median = statistics.median(logs)
        mad = statistics.median([abs(x - median) for x in logs])
        return cls(median, max(MAD_TO_SIGMA * mad * _small_sample(len(logs)), min_scale))

    def z(self, amount: int) -> float:
        return (math.log(amount) - self.median) / self.scale

    def share(self, low: int, high: int) -> float:
        """The share of amounts in [low, high) a log-normal with this median and scale has."""
        normal = NormalDist(self.median, self.scale)
        return normal.cdf(math.log(high)) - normal.cdf(math.log(low))

    def ratio(self, amount: int) -> float:
        return amount / math.exp(self.median)

    def explain(self, amount: int) -> dict[str, Any]:
        return {
            "amount": amount,
            "median": round(math.exp(self.median)),
            "ratio": round(self.ratio(amount), 1),
            "z": round(self.z(amount), 2),
        }


@dataclass
class Detector:
    """The four rules for one asset, with that asset's recent first deposits.

    ``assess`` only reads; call ``observe`` for every deposit assessed (held ones too: a
    burst or a structuring run is made of deposits that may each be held).
    """

    policy: AnomalyPolicy = field(default_factory=AnomalyPolicy)
    first_deposits: FirstDeposits = field(default_factory=FirstDeposits)

    def assess(
        self, history: UserHistory, amount: int, at: datetime, limit: int | None = None
    ) -> Finding | None:
        """The reason to hold a deposit of ``amount`` base units made at ``at`` by the user
        whose deposits so far are ``history``, or None. ``limit`` is the threshold a
        structuring run would stay under (KYC limit, reporting threshold), if any. One reason
        is given, the most specific first: structuring, first deposit, amount, burst."""
        if amount <= 0:
            return None
        stamp = _seconds(at)
        return (
            self._structuring(history, amount, stamp, limit)
            or self._first_large(history, amount)
            or self._amount(history, amount)
            or self._burst(history, stamp)
        )

    def observe(self, history: UserHistory, amount: int, at: datetime) -> None:
        """Record the deposit in the user's history (and, if it is their first, in the
        asset's first deposits)."""
        if history.seen == 0 and amount > 0:
            self.first_deposits.observe(amount)
        history.observe(amount, at)

    def _amount(self, history: UserHistory, amount: int) -> Finding | None:
        policy = self.policy
        if len(history.amounts) < policy.min_history:
            return None
        spread = _Spread.of(history.amounts, policy.min_log_scale)
        if spread.z(amount) < policy.amount_z or spread.ratio(amount) < policy.amount_min_ratio:
            return None
        return Finding(
            "anomaly_amount",
            {**spread.explain(amount), "history": len(history.amounts), "z_limit": policy.amount_z},
        )

    def _first_large(self, history: UserHistory, amount: int) -> Finding | None:
        policy = self.policy
        if history.seen > 0:
            return None
        if policy.first_absolute is not None and amount >= policy.first_absolute:
            return Finding(
                "anomaly_first_large", {"amount": amount, "absolute_limit": policy.first_absolute}
            )
        peers = self.first_deposits.amounts
        if len(peers) < policy.first_min_peers:
            return None
        spread = _Spread.of(peers, policy.min_log_scale)
        if spread.z(amount) < policy.first_z or spread.ratio(amount) < policy.first_min_ratio:
            return None
        return Finding(
            "anomaly_first_large",
            {**spread.explain(amount), "peers": len(peers), "z_limit": policy.first_z},
        )

    def _burst(self, history: UserHistory, stamp: float) -> Finding | None:
        policy = self.policy
        window = policy.burst_window.total_seconds()
        start = bisect.bisect_left(history.times, stamp - window)
        count = bisect.bisect_right(history.times, stamp) - start + 1
        if count <= policy.burst_count:
            return None
        # the user's usual count in such a window, from the deposits before it (a burst does
        # not raise its own bar) up to its start (a long silence lowers the rate)
        before = history.times[:start]
        usual = 0.0
        if before:
            usual = len(before) / max(stamp - window - before[0], window) * window
        at_least = max(policy.burst_count + 1, _poisson_bound(usual, policy.burst_chance))
        if count < at_least:
            return None
        return Finding(
            "anomaly_burst",
            {
                "count": count,
                "window_minutes": round(window / 60),
                "usual": round(usual, 2),
                "count_limit": at_least,
            },
        )

    def _structuring(
        self, history: UserHistory, amount: int, stamp: float, limit: int | None
    ) -> Finding | None:
        policy = self.policy
        margin = policy.structuring_margin
        if limit is None or not _just_under(amount, limit, margin):
            return None
        start = bisect.bisect_left(history.times, stamp - policy.structuring_window.total_seconds())
        end = bisect.bisect_right(history.times, stamp)
        under = 1 + sum(_just_under(a, limit, margin) for a in history.amounts[start:end])
        if under < policy.structuring_count:
            return None
        # a user whose amounts are usually near the limit lands just under it often by chance:
        # compare with the share of their deposits their own spread puts there (median and
        # MAD barely move for a few deposits far from the median, so the run itself does not
        # raise its own bar)
        usual = 0.0
        if len(history.amounts) >= policy.min_history:
            spread = _Spread.of(history.amounts, policy.min_log_scale)
            usual = spread.share(limit - int(limit * margin), limit)
        expected = usual * (end - start + 1)
        if under <= policy.structuring_factor * expected:
            return None
        return Finding(
            "anomaly_structuring",
            {
                "count": under,
                "deposits": end - start + 1,
                "usual_percent": round(usual * 100, 1),
                "limit": limit,
                "margin_percent": round(margin * 100, 1),
                "window_hours": round(policy.structuring_window.total_seconds() / 3600),
            },
        )


def _poisson_bound(mean: float, chance: float) -> int:
    """The smallest count c with P(N >= c) <= ``chance`` for N ~ Poisson(``mean``)."""
    term = math.exp(-mean)  # P(N = 0)
    below, count = term, 0  # below = P(N <= count)
    while 1 - below > chance:
        count += 1
        term *= mean / count
        below += term
    return count + 1


def _small_sample(n: int) -> float:
    """Croux & Rousseeuw's (1992) factor b_n that makes the MAD of n normal samples an
    unbiased estimate of sigma: a few deposits' MAD is too small on average, and a scale too
    small holds ordinary amounts."""
    if n <= 9:
        return _SMALL_SAMPLE[n]
    return n / (n - 0.8)


#: b_n for n = 0 .. 9 (n < 2 has no spread to correct)
_SMALL_SAMPLE = (1.0, 1.0, 1.196, 1.495, 1.363, 1.206, 1.200, 1.140, 1.129, 1.107)


def _just_under(amount: int, limit: int, margin: float) -> bool:
    return limit - int(limit * margin) <= amount < limit


def _seconds(at: datetime) -> float:
    if at.tzinfo is None:
        raise ValueError("deposit times must be timezone-aware")
    return at.timestamp()
