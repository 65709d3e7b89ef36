"""The audit log's hash chain, checked without a database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from depositd.domain.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditRecord,
    ChainCheck,
    chain_after,
)

START = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def chain(length: int) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    seq, head = 0, GENESIS_HASH
    for n in range(length):
        entry = AuditEntry("cli", "api_key.created", f"key_{n}", "mer_1", {"label": f"k{n}"})
        record = chain_after(seq, head, entry, START + timedelta(seconds=n))
        records.append(record)
        seq, head = record.seq, record.hash
    return records


def check(records: list[AuditRecord], head: AuditRecord | None = None) -> ChainCheck:
    found = ChainCheck()
    found.feed(records)
    last = head or records[-1]
    found.end(last.seq, last.hash)
    return found


def test_an_untouched_chain_holds() -> None:
    records = chain(4)
    assert records[0].prev_hash == GENESIS_HASH
    assert [r.seq for r in records] == [1, 2, 3, 4]
    found = check(records)
    assert (found.problem, found.rows, found.head) == (None, 4, records[-1].hash)


def test_the_hash_covers_every_field() -> None:
    record = chain(1)[0]
    for change in (
        {"at": record.at + timedelta(microseconds=1)},
        {"merchant_id": None},
        {"actor": "api_key:key_x"},
        {"action": "api_key.revoked"},
        {"subject": "key_other"},
        {"details": {"label": "k1"}},
        {"prev_hash": "1" * 64},
    ):
        found = check([replace(record, **change)], head=record)  # type: ignore[arg-type]
        assert found.problem == "row seq 1: hash does not match its contents (edited)", change


def test_edits_deletions_and_reordering_are_found_at_the_first_bad_row() -> None:
    records = chain(5)
    edited = [*records[:2], replace(records[2], subject="key_forged"), *records[3:]]
    assert check(edited).problem == "row seq 3: hash does not match its contents (edited)"
    deleted = records[:2] + records[3:]
    assert check(deleted).problem == "seq 3 missing (deleted)"
    # rows 2 and 3 swapped, each rehashed in its new place: only the links give it away
    second = chain_after(1, records[0].hash, _entry(records[2]), records[2].at)
    third = chain_after(2, records[0].hash, _entry(records[1]), records[1].at)
    third = replace(third, seq=3)
    third = replace(third, hash=_rehash(third))
    swapped = [records[0], second, third, *records[3:]]
    assert check(swapped).problem == (
        "row seq 3: prev_hash does not match row 2 (reordered or deleted)"
    )
    assert check(records[:4], head=records[4]).problem == "seq 5 missing (deleted)"


def _entry(record: AuditRecord) -> AuditEntry:
    return AuditEntry(record.actor, record.action, record.subject, record.merchant_id,
                      record.details)  # fmt: skip


def _rehash(record: AuditRecord) -> str:
    return chain_after(record.seq - 1, record.prev_hash, _entry(record), record.at).hash
