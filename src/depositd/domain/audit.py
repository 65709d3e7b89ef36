"""The audit log's hash chain: what an entry is, how it is hashed, how the chain is checked.

Each record's ``hash`` is SHA-256 over the canonical JSON (sorted keys, no spaces, ASCII) of
its ``seq``, ``at`` (ISO 8601, UTC, microseconds), ``merchant_id``, ``actor``, ``action``,
``subject``, ``details`` and ``prev_hash``; ``prev_hash`` is the hash of the record before
(64 zeros for the first). Editing a record changes its hash; deleting or reordering records
breaks a ``prev_hash`` link or the ``seq`` sequence, which starts at 1 and has no gaps.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: the ``prev_hash`` of the first record
GENESIS_HASH = "0" * 64

#: the actor of the command-line admin verbs and of the background workers
CLI_ACTOR = "cli"
WORKER_ACTOR = "worker"


def api_key_actor(key_id: str) -> str:
    """The actor of a request authorised by the API key ``key_id``."""
    return f"api_key:{key_id}"


@dataclass(frozen=True)
class AuditEntry:
    """What happened, before it takes its place in the chain. ``details`` never holds a
    secret: it is readable by anyone who may read the log."""

    actor: str
    #: ``<thing>.<past tense>``: ``api_key.created``, ``endpoint.secret_rotated``, ...
    action: str
    #: the id acted on
    subject: str
    merchant_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditRecord:
    """An entry in the chain."""

    seq: int
    at: datetime
    merchant_id: str | None
    actor: str
    action: str
    subject: str
    details: Mapping[str, Any]
    prev_hash: str
    hash: str


def record_hash(
    seq: int,
    at: datetime,
    merchant_id: str | None,
    actor: str,
    action: str,
    subject: str,
    details: Mapping[str, Any],
    prev_hash: str,
) -> str:
    canonical = json.dumps(
        {
            "seq": seq,
            "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
            "merchant_id": merchant_id,
            "actor": actor,
            "action": action,
            "subject": subject,
            "details": details,
            "prev_hash": prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def chain_after(head_seq: int, head_hash: str, entry: AuditEntry, at: datetime) -> AuditRecord:
    """``entry`` as the record after the chain's head (seq 0 and ``GENESIS_HASH``: empty)."""
    seq, details = head_seq + 1, dict(entry.details)
    digest = record_hash(
        seq, at, entry.merchant_id, entry.actor, entry.action, entry.subject, details, head_hash
    )
    return AuditRecord(
        seq, at, entry.merchant_id, entry.actor, entry.action, entry.subject, details, head_hash,
        digest,
    )  # fmt: skip


@dataclass
class ChainCheck:
    """Walks records in ``seq`` order (``feed`` them in batches) and stops at the first
    break: ``problem`` says what it is, ``None`` while the chain holds."""

    rows: int = 0
    last_seq: int = 0
    head: str = GENESIS_HASH
    problem: str | None = None

    def feed(self, records: Iterable[AuditRecord]) -> bool:
        """Check the next records; False once a break is found (feed no more)."""
        for record in records:
            if self.problem is not None:
                return False
            self.problem = self._check(record)
            if self.problem is None:
                self.rows += 1
                self.last_seq = record.seq
                self.head = record.hash
        return self.problem is None

    def _check(self, record: AuditRecord) -> str | None:
        expected = self.last_seq + 1
        if record.seq < expected:
            return f"row seq {record.seq}: out of order after seq {self.last_seq}"
        if record.seq > expected:
            missing = (
                f"seq {expected}"
                if record.seq == expected + 1
                else f"seq {expected}-{record.seq - 1}"
            )
            return f"{missing} missing (deleted)"
        recomputed = record_hash(
            record.seq, record.at, record.merchant_id, record.actor, record.action,
            record.subject, record.details, record.prev_hash,
        )  # fmt: skip
        if recomputed != record.hash:
            return f"row seq {record.seq}: hash does not match its contents (edited)"
        if record.prev_hash != self.head:
            before = f"row {self.last_seq}" if self.last_seq else "the start of the chain"
            return f"row seq {record.seq}: prev_hash does not match {before} (reordered or deleted)"
        return None

    def end(self, head_seq: int, head_hash: str) -> None:
        """Compare the last record walked with the head the appenders keep: records cut
        off the end of the chain show here."""
        if self.problem is not None:
            return
        if head_seq > self.last_seq:
            first = self.last_seq + 1
            gone = f"seq {first}" if head_seq == first else f"seq {first}-{head_seq}"
            self.problem = f"{gone} missing (deleted)"
        elif head_seq < self.last_seq or head_hash != self.head:
            self.problem = (
                f"the chain's head (seq {head_seq}) does not match its last row"
                f" (seq {self.last_seq}): rows added or changed outside the log"
            )
