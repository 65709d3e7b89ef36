"""A minute of chaos on PostgreSQL: nginx, two API replicas and two workers under deposits,
callbacks, webhooks and WebSocket streams, one of them SIGKILLed every few seconds — then
every deposit credited exactly once, the ledger equal to what was sent, every event delivered
and streamed, and no error outside the kill windows (``harness``; ``bench/chaos.py`` runs it
for ten minutes)."""

from __future__ import annotations

from pathlib import Path

from .harness import Load, Settings, soak


async def test_a_minute_of_sigkills_loses_and_doubles_nothing_postgresql(tmp_path: Path) -> None:
    settings = Settings(
        seconds=60,
        kill_every=4.0,
        seed=7,
        load=Load(deposits_per_second=1.5, callbacks_per_second=3.0, users=8),
        drain_seconds=90,
    )
    report = await soak(settings, tmp_path, say=print)
    summary = "\n".join(report.lines())
    print(summary)
    assert report.passed, summary
