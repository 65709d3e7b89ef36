"""Deposit anomaly detection on a labelled synthetic stream: precision, recall, deposits/s.

The stream (seeded, no I/O): --users users of one asset (USDT, 6 decimals) make about
--deposits deposits over 30 simulated days. Each user has a typical amount drawn log-normally
across users (median 100 USDT, sigma 1.0 in log: most between 15 and 700 USDT), an amount
spread of their own (log sigma 0.2-0.8) and an activity weight (log-normal), joins at a
uniform time in the first 20 days with their first deposit, and deposits at uniform times
(a Poisson process given its count) until day 30. Then about 2% anomalous deposits, each
belonging to one injected incident:

  amount       a deposit of a user with at least 10 before it, multiplied by 10-100
               (log-uniform);
  burst        5-15 extra deposits of the user's usual amounts within 5-120 minutes;
  structuring  3-6 deposits of 88-99.9% of a 1,000 USDT limit within 1-5 days;
  first_large  a new user's first deposit of 5,000-200,000 USDT (log-uniform).

The detector (``depositd.domain.anomaly``, default policy, the limit passed for every deposit
is 1,000 USDT) assesses and then observes every deposit in time order, one history per user.
Recall counts incidents: one is found when at least one of its deposits is held (the first
deposits of a burst or structuring run cannot be: the pattern is not there yet); per-deposit
recall is printed too. Precision counts held deposits: those that belong to an incident over
all held. Exits 1 if recall < 0.9 or precision < 0.8.

    .venv/bin/python bench/anomaly.py [--seed 1] [--users 2000] [--deposits 50000]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from depositd.domain.anomaly import AnomalyPolicy, Detector, Finding, UserHistory

USDT = 10**6
LIMIT = 1_000 * USDT
DAY = 86_400.0
DAYS = 30
EPOCH = datetime(2026, 11, 1, tzinfo=UTC)
PATTERNS = ("amount", "burst", "structuring", "first_large")
TARGET_RECALL = 0.9
TARGET_PRECISION = 0.8


@dataclass
class User:
    median: float  # USDT
    sigma: float
    joins: float  # seconds after EPOCH

    def amount(self, rng: random.Random) -> int:
        return max(USDT, round(rng.lognormvariate(math.log(self.median), self.sigma) * USDT))


@dataclass
class Deposit:
    user: int
    at: float  # seconds after EPOCH
    amount: int
    incident: int | None = None


@dataclass
class Incident:
    pattern: str
    #: for amount outliers the factor applied, else 0
    factor: float = 0.0


def log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def generate(seed: int, users: int, deposits: int) -> tuple[list[Deposit], list[Incident]]:
    """The labelled stream, sorted by time."""
    rng = random.Random(seed)
    people = [
        User(rng.lognormvariate(math.log(100), 1.0), rng.uniform(0.2, 0.8), rng.uniform(0, 20))
        for _ in range(users)
    ]
    for person in people:
        person.joins *= DAY
    weights = [rng.lognormvariate(0, 1.0) for _ in people]
    counts = Counter(rng.choices(range(users), weights, k=max(0, round(deposits * 0.98) - users)))
    stream: list[Deposit] = []
    by_user: dict[int, list[Deposit]] = {}
    for index, person in enumerate(people):
        times = sorted(rng.uniform(person.joins, DAYS * DAY) for _ in range(counts[index]))
        own = [Deposit(index, t, person.amount(rng)) for t in [person.joins, *times]]
        by_user[index] = own
        stream.extend(own)
    incidents: list[Incident] = []

    def incident(pattern: str, factor: float = 0.0) -> int:
        incidents.append(Incident(pattern, factor))
        return len(incidents) - 1

    established = [d for own in by_user.values() for d in own[10:]]
    for deposit in rng.sample(established, round(deposits * 0.006)):
        factor = log_uniform(rng, 10, 100)
        deposit.amount = round(deposit.amount * factor)
        deposit.incident = incident("amount", factor)
    for _ in range(round(deposits * 0.0008)):
        index = rng.randrange(users)
        person, label = people[index], incident("burst")
        start = rng.uniform(person.joins, DAYS * DAY)
        minutes = rng.uniform(5, 120)
        stream.extend(
            Deposit(index, start + rng.uniform(0, minutes * 60), person.amount(rng), label)
            for _ in range(rng.randint(5, 15))
        )
    for _ in range(round(deposits * 0.001)):
        index = rng.randrange(users)
        start, label = rng.uniform(people[index].joins, DAYS * DAY), incident("structuring")
        days = rng.uniform(1, 5)
        stream.extend(
            Deposit(
                index,
                start + rng.uniform(0, days * DAY),
                round(LIMIT * rng.uniform(0.88, 0.999)),
                label,
            )
            for _ in range(rng.randint(3, 6))
        )
    for index in rng.sample(range(users), round(users * 0.02)):
        first = by_user[index][0]
        first.amount = round(log_uniform(rng, 5_000, 200_000) * USDT)
        first.incident = incident("first_large")
    stream.sort(key=lambda d: d.at)
    return stream, incidents


def detect(stream: list[Deposit], policy: AnomalyPolicy) -> tuple[list[Finding | None], float]:
    """Each deposit's finding, in stream order, and the seconds the detector took."""
    moments = [EPOCH + timedelta(seconds=d.at) for d in stream]
    detector = Detector(policy)
    histories: defaultdict[int, UserHistory] = defaultdict(UserHistory)
    findings: list[Finding | None] = []
    started = time.perf_counter()
    for deposit, at in zip(stream, moments, strict=True):
        history = histories[deposit.user]
        findings.append(detector.assess(history, deposit.amount, at, LIMIT))
        detector.observe(history, deposit.amount, at)
    return findings, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--deposits", type=int, default=50_000)
    args = parser.parse_args()

    stream, incidents = generate(args.seed, args.users, args.deposits)
    findings, seconds = detect(stream, AnomalyPolicy())

    held = [i for i, f in enumerate(findings) if f is not None]
    true = [i for i in held if stream[i].incident is not None]
    found = {stream[i].incident for i in true}
    labelled = [d for d in stream if d.incident is not None]
    print(
        f"seed {args.seed}: {len(stream):,} deposits of {args.users:,} users over {DAYS} days,"
        f" {len(labelled):,} anomalous ({len(labelled) / len(stream):.1%}) in"
        f" {len(incidents):,} incidents; {len(stream) / seconds:,.0f} deposits/s assessed"
    )
    print(
        f"{'pattern':<12} {'incidents':>9} {'found':>6} {'recall':>7} {'deposits held':>14}  codes"
    )
    for pattern in PATTERNS:
        ids = [n for n, inc in enumerate(incidents) if inc.pattern == pattern]
        members = [
            i
            for i, d in enumerate(stream)
            if d.incident is not None and incidents[d.incident].pattern == pattern
        ]
        caught = [i for i in members if findings[i] is not None]
        codes = Counter(f.code for i in caught if (f := findings[i]) is not None)
        hits = sum(n in found for n in ids)
        print(
            f"{pattern:<12} {len(ids):>9} {hits:>6} {_ratio(hits, len(ids)):>7.3f}"
            f" {len(caught):>6}/{len(members):<7}  {dict(codes.most_common())}"
        )
    print("amount outliers by factor:", end="")
    for low, high in ((10, 20), (20, 50), (50, 100)):
        ids = [
            n
            for n, inc in enumerate(incidents)
            if inc.pattern == "amount" and low <= inc.factor < high
        ]
        print(
            f"  {low}-{high}x {_ratio(sum(n in found for n in ids), len(ids)):.3f} of {len(ids)}",
            end="",
        )
    print()
    false = Counter(
        f.code for i in held if stream[i].incident is None and (f := findings[i]) is not None
    )
    recall = _ratio(len(found), len(incidents))
    precision = _ratio(len(true), len(held))
    per_deposit = _ratio(len(true), len(labelled))
    print(
        f"overall: recall {recall:.3f} (incidents; deposits {per_deposit:.3f}),"
        f" precision {precision:.3f} ({len(true):,} of {len(held):,} held);"
        f" false holds by code {dict(false.most_common())}"
    )
    if recall < TARGET_RECALL or precision < TARGET_PRECISION:
        print(f"below target: recall >= {TARGET_RECALL} at precision >= {TARGET_PRECISION}")
        sys.exit(1)


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else float("nan")


if __name__ == "__main__":
    main()
