"""The operator's delivery verbs: ``depositd deliveries list|retry`` and ``depositd replay``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from depositd.clock import utcnow
from depositd.config import Config
from depositd.db.engine import Database
from depositd.db.tables import deliveries
from depositd.delivery.retries import MAX_ATTEMPTS
from depositd.services import deliveries as delivery_service
from depositd.services import endpoints, merchants

from .test_cli import depositd
from .test_deliveries_api import emit, outbox, set_delivery
from .test_endpoints_api import HOOK
from .test_sender import rows


def environment(db: Database) -> dict[str, str]:
    return {"DEPOSITD_DATABASE__URL": db.url.render_as_string(hide_password=False)}


async def endpoint_of(db: Database, config: Config, merchant_id: str, *types: str) -> str:
    created = await endpoints.create_endpoint(
        db, config.delivery, merchant_id, HOOK, event_types=types or ("*",), actor="tests"
    )
    return created.endpoint.id


async def test_list_and_retry(db: Database, config: Config, tmp_path: Path) -> None:
    env = environment(db)
    acme = (await merchants.create_merchant(db, "acme")).id
    rival = (await merchants.create_merchant(db, "rival")).id
    hook = await endpoint_of(db, config, acme)
    theirs = await endpoint_of(db, config, rival)
    pending, credited = await emit(db, acme, "deposit.pending", "deposit.credited")
    (their_seq,) = await emit(db, rival, "deposit.held")
    first, second = await outbox(db, hook)
    await set_delivery(
        db,
        second.id,
        status="dead",
        attempts=MAX_ATTEMPTS,
        last_status_code=500,
        last_error="HTTP 500\n(upstream down)",
        finished_at=utcnow(),
    )
    (their_row,) = await outbox(db, theirs)

    listed = depositd("deliveries", "list", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    lines = [line.split("\t") for line in listed.stdout.splitlines()]
    # every merchant's, newest first
    assert [int(line[0]) for line in lines] == [their_row.id, second.id, first.id]
    status, merchant, endpoint, seq, event_type, attempts = lines[0][1:7]
    assert (status, merchant, endpoint, seq) == ("pending", rival, theirs, f"seq {their_seq}")
    assert (event_type, attempts) == ("deposit.held", "attempts 0")
    assert lines[0][7].startswith("due ")
    assert lines[0][8] == "-"
    status, merchant, endpoint, seq, event_type, attempts = lines[1][1:7]
    assert (status, merchant, endpoint, seq) == ("dead", acme, hook, f"seq {credited}")
    assert (event_type, attempts) == ("deposit.credited", f"attempts {MAX_ATTEMPTS}")
    assert lines[1][7].startswith("finished ")
    assert lines[1][8] == "HTTP 500 (upstream down)"
    assert lines[2][4] == f"seq {pending}"

    dead = depositd("deliveries", "list", "--status", "dead", cwd=tmp_path, env=env)
    assert [line.split("\t")[0] for line in dead.stdout.splitlines()] == [str(second.id)]
    mine = depositd("deliveries", "list", "--endpoint", hook, "--limit", "1", cwd=tmp_path, env=env)
    assert [line.split("\t")[0] for line in mine.stdout.splitlines()] == [str(second.id)]

    retried = depositd("deliveries", "retry", str(second.id), cwd=tmp_path, env=env)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout == (
        f"delivery {second.id} of event {credited} to {hook} is due now"
        f" (it was dead after {MAX_ATTEMPTS} attempts)\n"
    )
    (row,) = await rows(db, select(deliveries).where(deliveries.c.id == second.id))
    assert (row.status, row.attempts, row.finished_at) == ("pending", MAX_ATTEMPTS, None)
    assert row.next_attempt_at <= utcnow()


async def test_replay(db: Database, config: Config, tmp_path: Path) -> None:
    env = environment(db)
    acme = (await merchants.create_merchant(db, "acme")).id
    hook = await endpoint_of(db, config, acme, "deposit.credited")
    start = utcnow() - timedelta(hours=1)
    seqs = []
    for minute in range(3):
        seqs += await emit(
            db, acme, "deposit.credited", "deposit.held", when=start + timedelta(minutes=minute)
        )
    credited = seqs[0::2]
    for row in await outbox(db, hook):
        await set_delivery(db, row.id, status="delivered", attempts=1, finished_at=utcnow())

    replayed = depositd(
        "replay", hook, "--after-seq", str(credited[0]), "--rate", "10", cwd=tmp_path, env=env
    )
    assert replayed.returncode == 0, replayed.stderr
    queued = await outbox(db, hook)
    assert [(r.event_seq, r.status) for r in queued] == [
        (credited[0], "delivered"),
        (credited[1], "pending"),
        (credited[2], "pending"),
    ]
    assert queued[2].next_attempt_at - queued[1].next_attempt_at == timedelta(seconds=0.1)
    due = queued[2].next_attempt_at.isoformat(timespec="seconds")
    assert replayed.stdout == (
        f"queued 2 events (seq {credited[1]}..{credited[2]}) for {hook}, all due by {due}\n"
    )

    in_range = depositd(
        "replay",
        hook,
        "--from",
        start.isoformat(),
        "--to",
        (start + timedelta(minutes=1)).isoformat(),
        cwd=tmp_path,
        env=env,
    )
    assert in_range.returncode == 0, in_range.stderr
    assert in_range.stdout.startswith(f"queued 1 events (seq {credited[0]}..{credited[0]}) for")
    assert {r.status for r in await outbox(db, hook)} == {"pending"}

    empty = depositd("replay", hook, "--after-seq", str(seqs[-1]), cwd=tmp_path, env=env)
    assert (empty.returncode, empty.stdout) == (0, f"nothing to replay to {hook}\n")


async def test_mistakes_are_one_line_and_exit_1(
    db: Database, config: Config, tmp_path: Path
) -> None:
    env = environment(db)
    acme = (await merchants.create_merchant(db, "acme")).id
    hook = await endpoint_of(db, config, acme)
    paused = await endpoint_of(db, config, acme)
    await emit(db, acme, "deposit.credited")
    await endpoints.disable_endpoint(db, acme, paused, actor="tests")
    (row,) = await outbox(db, paused)
    later = datetime.fromisoformat("2024-05-02T00:00:00+00:00")
    cases: list[tuple[tuple[str, ...], str]] = [
        (("deliveries", "retry", "999999"), "no delivery 999999"),
        (("deliveries", "retry", "abc"), "DELIVERY_ID 'abc': not a number"),
        (("deliveries", "retry", str(row.id)), f"endpoint {paused} is disabled"),
        (("deliveries", "list", "--endpoint", "end_nope"), "no endpoint end_nope"),
        (("deliveries", "list", "--limit", "0"), "limit is between 1 and 500"),
        (("deliveries", "list", "--limit", "many"), "--limit 'many': not a number"),
        (("replay", "end_nope", "--after-seq", "0"), "no endpoint end_nope"),
        (("replay", paused, "--after-seq", "0"), f"endpoint {paused} is disabled"),
        (("replay", hook), "replay: give --after-seq N, or --from T and --to T"),
        (("replay", hook, "--after-seq", "0", "--from", "2024-05-01T00:00Z"), "replay: give"),
        (("replay", hook, "--from", "2024-05-01T00:00Z"), "replay: --from and --to go together"),
        (("replay", hook, "--after-seq", "-1"), "the seq to replay after is 0 or more"),
        (("replay", hook, "--from", "May", "--to", "June"), "--from 'May': write an ISO time"),
        (
            ("replay", hook, "--from", "2024-05-01T00:00", "--to", later.isoformat()),
            "--from '2024-05-01T00:00': write an ISO time with a UTC offset",
        ),
        (
            ("replay", hook, "--from", later.isoformat(), "--to", "2024-05-01T00:00Z"),
            "the time range is empty",
        ),
        (("replay", hook, "--after-seq", "0", "--rate", "0"), "the rate is between 1 and 1000"),
        (("replay", hook, "--after-seq", "0", "--rate", "nan"), "the rate is between 1 and 1000"),
    ]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda case: depositd(*case[0], cwd=tmp_path, env=env), cases))
    for (args, says), result in zip(cases, results, strict=True):
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert result.stderr.startswith(f"depositd: {says}"), (args, result.stderr)
        assert result.stderr.count("\n") == 1, (args, result.stderr)
        assert result.stdout == "", args
    (unchanged,) = await outbox(db, paused)
    assert (unchanged.status, unchanged.next_attempt_at) == (row.status, row.next_attempt_at)


def test_replay_help_states_the_service_bounds(tmp_path: Path) -> None:
    shown = depositd("replay", "--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert f"At most {delivery_service.MAX_REPLAY_EVENTS:,} events" in text
    assert f"(default: {delivery_service.DEFAULT_REPLAY_RATE:g})" in text
