"""Reading the audit log: check the whole chain, list the latest records."""

from __future__ import annotations

from dataclasses import dataclass

from depositd.db.engine import Database
from depositd.db.uow import UnitOfWork
from depositd.domain.audit import AuditRecord, ChainCheck
from depositd.errors import InputError

#: records read per query while verifying
VERIFY_BATCH = 1000
#: most records one listing shows
MAX_LIST = 1000


@dataclass(frozen=True)
class Verdict:
    #: records that checked out, up to the first problem
    rows: int
    #: the hash of the last good record (64 zeros for an empty log)
    head: str
    #: the first problem found, None when the chain is intact
    problem: str | None

    @property
    def intact(self) -> bool:
        return self.problem is None


async def verify_audit_log(db: Database, batch: int = VERIFY_BATCH) -> Verdict:
    """Walk the chain in seq order, recomputing each hash, and compare its end with the head.

    Only the records up to the head read first are walked: appends committed meanwhile are
    left for the next run.
    """
    check = ChainCheck()
    async with UnitOfWork(db, write=False) as uow:
        head_seq, head_hash = await uow.audit.head()
        while True:
            records = await uow.audit.after(check.last_seq, head_seq, batch)
            if not check.feed(records) or len(records) < batch:
                break
        check.end(head_seq, head_hash)
    return Verdict(check.rows, check.head, check.problem)


async def latest_audit_records(
    db: Database, merchant_id: str | None = None, limit: int = 50
) -> list[AuditRecord]:
    """The newest records first, of one merchant or of everyone."""
    if not 1 <= limit <= MAX_LIST:
        raise InputError(f"limit is between 1 and {MAX_LIST}")
    async with UnitOfWork(db, write=False) as uow:
        return await uow.audit.latest(merchant_id, None, limit)
