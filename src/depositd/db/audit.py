"""The audit log's rows: append to the chain under its head's lock, read it in order."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import Select, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from depositd.db.tables import audit_head, audit_log
from depositd.domain.audit import AuditEntry, AuditRecord, chain_after
from depositd.jsontext import dump_json

# The head's row lock (FOR UPDATE; SQLite has one writer anyway) orders appenders: each reads
# the head another committed, so seqs never repeat and every prev_hash is the one before.
_LOCK_HEAD = (
    select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
)


def _insert(record: AuditRecord) -> Any:
    return audit_log.insert().values(**vars(record))


def _move_head(record: AuditRecord) -> Any:
    return update(audit_head).where(audit_head.c.id == 1).values(seq=record.seq, hash=record.hash)


def _record(row: Mapping[Any, Any]) -> AuditRecord:
    return AuditRecord(**row)


class AuditRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def append(self, entry: AuditEntry, now: datetime) -> AuditRecord:
        """Chain ``entry`` on; the head stays locked until this transaction ends, so call
        it as the transaction's last write."""
        head = (await self._conn.execute(_LOCK_HEAD)).one()
        record = chain_after(head.seq, head.hash, entry, now)
        await self._conn.execute(_insert(record))
        await self._conn.execute(_move_head(record))
        return record

    async def head(self) -> tuple[int, str]:
        row = (await self._conn.execute(select(audit_head.c.seq, audit_head.c.hash))).one()
        return row.seq, row.hash

    async def after(self, seq: int, through: int, limit: int) -> list[AuditRecord]:
        """The records after ``seq`` up to ``through``, in seq order."""
        stmt = (
            select(audit_log)
            .where(audit_log.c.seq > seq, audit_log.c.seq <= through)
            .order_by(audit_log.c.seq)
            .limit(limit)
        )
        return [_record(row._mapping) for row in await self._conn.execute(stmt)]

    async def latest(
        self, merchant_id: str | None, before_seq: int | None, limit: int
    ) -> list[AuditRecord]:
        """The newest records first, of one merchant or (None) of everyone."""
        stmt: Select[Any] = select(audit_log).order_by(audit_log.c.seq.desc()).limit(limit)
        if merchant_id is not None:
            stmt = stmt.where(audit_log.c.merchant_id == merchant_id)
        if before_seq is not None:
            stmt = stmt.where(audit_log.c.seq < before_seq)
        return [_record(row._mapping) for row in await self._conn.execute(stmt)]


_PG_LOCK_HEAD = "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE"
_PG_INSERT = """
INSERT INTO audit_log (seq, at, merchant_id, actor, action, subject, details, prev_hash, hash)
VALUES ($1, $2, $3, $4, $5, $6, $7::json, $8, $9)"""
_PG_MOVE_HEAD = "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1"


async def pg_append(conn: asyncpg.Connection, entry: AuditEntry, now: datetime) -> AuditRecord:
    """``AuditRepository.append`` on a plain asyncpg connection (the recording path's)."""
    head = await conn.fetchrow(_PG_LOCK_HEAD)
    record = chain_after(head["seq"], head["hash"], entry, now)
    await conn.execute(
        _PG_INSERT,
        record.seq,
        record.at,
        record.merchant_id,
        record.actor,
        record.action,
        record.subject,
        dump_json(record.details),
        record.prev_hash,
        record.hash,
    )
    await conn.execute(_PG_MOVE_HEAD, record.seq, record.hash)
    return record


def append_sync(conn: Connection, entry: AuditEntry, now: datetime) -> AuditRecord:
    """``AuditRepository.append`` on a synchronous connection (the SQLite recording path's)."""
    head = conn.execute(_LOCK_HEAD).one()
    record = chain_after(head.seq, head.hash, entry, now)
    conn.execute(_insert(record))
    conn.execute(_move_head(record))
    return record
