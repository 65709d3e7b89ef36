"""Deposit anomaly detection: which deposits are held, and the numbers that say why."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest

from depositd.domain.anomaly import (
    FIRST_DEPOSITS_SIZE,
    HISTORY_SIZE,
    AnomalyPolicy,
    Detector,
    Finding,
    FirstDeposits,
    UserHistory,
)

USDT = 10**6
LIMIT = 1_000 * USDT
T0 = datetime(2026, 11, 1, tzinfo=UTC)
#: an ordinary user's amounts: around 100 USDT, a factor of 1.5 either way
ORDINARY = [100, 80, 120, 95, 150, 70, 110, 90, 130, 105]


def feed(
    detector: Detector,
    history: UserHistory,
    amounts: Iterable[int],
    start: datetime,
    every: timedelta,
    limit: int | None = LIMIT,
) -> list[Finding | None]:
    """Assess and then observe each deposit (amounts in USDT), ``every`` apart from ``start``."""
    findings = []
    for n, amount in enumerate(amounts):
        at = start + n * every
        findings.append(detector.assess(history, amount * USDT, at, limit))
        detector.observe(history, amount * USDT, at)
    return findings


def regular_user(detector: Detector, deposits: int = 20, scale: int = 1) -> UserHistory:
    """A user with ``deposits`` ordinary deposits (times ``scale``), one a day from T0, none
    of them held."""
    history = UserHistory()
    amounts = [a * scale for a in (ORDINARY * 10)[:deposits]]
    findings = feed(detector, history, amounts, T0, timedelta(days=1))
    assert findings == [None] * deposits
    return history


def next_day(history: UserHistory) -> datetime:
    return datetime.fromtimestamp(history.times[-1], UTC) + timedelta(days=1)


def test_an_amount_far_above_the_users_history_is_held_with_the_numbers_behind_it() -> None:
    detector = Detector()
    history = regular_user(detector)

    finding = detector.assess(history, 2_000 * USDT, next_day(history), LIMIT)

    assert finding is not None
    assert finding.code == "anomaly_amount"
    assert finding.params["amount"] == 2_000 * USDT
    # the median of the logs: for an even count, the geometric mean of the middle two
    assert finding.params["median"] == round((100 * 105) ** 0.5 * USDT)
    assert finding.params["ratio"] == pytest.approx(19.5, abs=0.1)
    assert finding.params["z"] >= finding.params["z_limit"] == 3.0
    assert finding.params["history"] == 20
    json.dumps(finding.params)  # stored with the hold as it is


@pytest.mark.parametrize("amount", [1, 50, 100, 200, 300])
def test_amounts_within_or_below_the_users_habits_are_not_held(amount: int) -> None:
    detector = Detector()
    history = regular_user(detector)
    assert detector.assess(history, amount * USDT, next_day(history), LIMIT) is None


def test_a_user_with_few_deposits_is_not_judged_by_their_amounts() -> None:
    detector = Detector()
    history = regular_user(detector, deposits=AnomalyPolicy().min_history - 1)
    assert detector.assess(history, 5_000 * USDT, next_day(history), LIMIT) is None


def test_a_user_who_always_sends_the_same_amount_may_send_a_little_more() -> None:
    detector = Detector()
    history = UserHistory()
    assert feed(detector, history, [100] * 20, T0, timedelta(days=1)) == [None] * 20

    assert detector.assess(history, 150 * USDT, next_day(history), LIMIT) is None
    held = detector.assess(history, 600 * USDT, next_day(history), LIMIT)
    assert held is not None
    assert held.code == "anomaly_amount"


def test_a_quiet_users_burst_is_held_from_the_deposit_that_makes_it() -> None:
    detector = Detector()
    history = regular_user(detector)

    findings = feed(detector, history, [50] * 6, next_day(history), timedelta(minutes=6))

    assert findings[:4] == [None] * 4
    burst = findings[4]
    assert burst is not None
    assert burst.code == "anomaly_burst"
    assert burst.params["count"] == 5
    assert burst.params["window_minutes"] == 60
    assert burst.params["count_limit"] == 5
    assert burst.params["usual"] == pytest.approx(1 / 24, abs=0.01)  # one a day
    assert findings[5] is not None
    assert findings[5].params["count"] == 6


def test_a_heavy_users_busy_hour_is_not_a_burst() -> None:
    detector = Detector()
    history = UserHistory()
    # six deposits an hour for eight hours: their ordinary day
    findings = feed(detector, history, ORDINARY * 5, T0, timedelta(minutes=10))
    assert findings[HISTORY_SIZE - 10 :] == [None] * 10

    again = T0 + timedelta(days=1)
    assert feed(detector, history, [100] * 7, again, timedelta(minutes=9)) == [None] * 7


def test_deposits_just_under_the_limit_are_structuring_from_the_third() -> None:
    detector = Detector()
    history = regular_user(detector, scale=4)  # around 400 USDT: 950 is not far above
    start = next_day(history)

    findings = feed(detector, history, [950, 420, 990, 1_000, 905], start, timedelta(hours=20))

    assert findings[:4] == [None] * 4  # 1,000 is not under the limit: it does not count
    finding = findings[4]
    assert finding is not None
    assert finding.code == "anomaly_structuring"
    assert finding.params == {
        "count": 3,
        "deposits": 8,  # these five and the user's daily ones of the last three days
        "usual_percent": pytest.approx(0.5, abs=0.5),
        "limit": LIMIT,
        "margin_percent": 10.0,
        "window_hours": 168,
    }


def test_deposits_just_under_the_limit_a_week_apart_are_not_structuring() -> None:
    detector = Detector()
    history = regular_user(detector, scale=4)
    findings = feed(detector, history, [950, 960, 970], next_day(history), timedelta(days=4))
    assert findings == [None, None, None]


def test_without_a_limit_there_is_no_structuring() -> None:
    detector = Detector()
    history = regular_user(detector, scale=4)
    findings = feed(detector, history, [950] * 4, next_day(history), timedelta(hours=2), limit=None)
    assert findings == [None] * 4


def test_a_user_whose_amounts_are_near_the_limit_is_not_structuring_by_chance() -> None:
    detector = Detector()
    history = UserHistory()
    near = [700, 1_200, 950, 800, 1_400, 920, 1_050, 640, 990, 1_100]
    findings = feed(detector, history, near * 3, T0, timedelta(hours=12))
    assert findings == [None] * 30


def peers(detector: Detector, count: int) -> None:
    """``count`` new users whose first deposits were ordinary."""
    for n in range(count):
        feed(detector, UserHistory(), [ORDINARY[n % len(ORDINARY)]], T0, timedelta(0))


def test_an_unusually_large_first_deposit_is_held_against_the_other_newcomers() -> None:
    detector = Detector()
    peers(detector, 30)

    finding = detector.assess(UserHistory(), 20_000 * USDT, T0, LIMIT)

    assert finding is not None
    assert finding.code == "anomaly_first_large"
    assert finding.params["peers"] == 30
    assert finding.params["median"] == round((100 * 105) ** 0.5 * USDT)
    assert finding.params["ratio"] == pytest.approx(195.2, abs=0.1)
    assert finding.params["z"] >= finding.params["z_limit"]
    assert detector.assess(UserHistory(), 300 * USDT, T0, LIMIT) is None


def test_a_large_first_deposit_needs_newcomers_to_compare_with_or_an_absolute_limit() -> None:
    detector = Detector()
    peers(detector, AnomalyPolicy().first_min_peers - 1)
    assert detector.assess(UserHistory(), 20_000 * USDT, T0, LIMIT) is None

    strict = Detector(AnomalyPolicy(first_absolute=10_000 * USDT))
    finding = strict.assess(UserHistory(), 20_000 * USDT, T0, LIMIT)
    assert finding == Finding(
        "anomaly_first_large", {"amount": 20_000 * USDT, "absolute_limit": 10_000 * USDT}
    )


def test_only_the_first_deposit_is_judged_as_a_first_deposit() -> None:
    detector = Detector()
    peers(detector, 30)
    history = UserHistory()
    feed(detector, history, [100], T0, timedelta(0))
    assert detector.assess(history, 20_000 * USDT, T0 + timedelta(days=1), LIMIT) is None


def test_histories_keep_only_the_most_recent_deposits() -> None:
    detector = Detector()
    history = UserHistory()
    feed(detector, history, range(1, 201), T0, timedelta(minutes=30))

    assert len(history.amounts) == len(history.times) == HISTORY_SIZE
    assert history.amounts[0] == (201 - HISTORY_SIZE) * USDT
    assert history.seen == 200
    assert len(detector.first_deposits.amounts) == 1

    peers(detector, FIRST_DEPOSITS_SIZE + 10)
    assert len(detector.first_deposits.amounts) == FIRST_DEPOSITS_SIZE


def test_a_late_deposit_takes_its_place_in_time() -> None:
    history = UserHistory()
    history.observe(1, T0 + timedelta(hours=2))
    history.observe(2, T0)
    history.observe(3, T0 + timedelta(hours=1))
    assert history.amounts == [2, 3, 1]
    assert history.times == sorted(history.times)


def test_state_round_trips_through_json() -> None:
    detector = Detector()
    history = regular_user(detector)
    history.observe(10**30, T0 + timedelta(days=40))  # an 18-decimal asset's base units

    stored = json.loads(json.dumps(history.to_json()))
    assert all(isinstance(a, str) for a in stored["amounts"])
    assert UserHistory.from_json(stored) == history

    first = json.loads(json.dumps(detector.first_deposits.to_json()))
    assert FirstDeposits.from_json(first) == detector.first_deposits


def test_a_zero_amount_is_neither_held_nor_kept() -> None:
    detector = Detector()
    history = regular_user(detector)
    assert feed(detector, history, [0], next_day(history), timedelta(0)) == [None]
    assert history.seen == 20


def test_times_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Detector().assess(UserHistory(), USDT, datetime(2026, 11, 1), LIMIT)
