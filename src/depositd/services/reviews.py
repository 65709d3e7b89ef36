"""A reviewer's decision on a held deposit: approve (credit it) or reject it for good.

The decision is one more transition of the deposit, recorded like every other: the deposit
row, its ledger credit (on approval), its event and the deliveries to subscribed endpoints,
and the decision's audit record, in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from depositd.clock import utcnow
from depositd.db.engine import Database
from depositd.db.recording import open_recording
from depositd.db.transient import retry_transient
from depositd.domain import deposits as machine
from depositd.domain.assets import AssetBook
from depositd.domain.audit import AuditEntry
from depositd.domain.deposits import DepositState, DepositStatus
from depositd.domain.events import deposit_event
from depositd.domain.ledger import postings_for
from depositd.errors import Conflict, NotFound
from depositd.ids import new_id
from depositd.services.observations import announce_events
from depositd.services.queries import get_deposit


class NotHeld(Conflict):
    slug = "deposit-not-held"


async def review_deposit(
    db: Database,
    assets: AssetBook,
    merchant_id: str,
    deposit_id: str,
    *,
    approve: bool,
    actor: str,
    clock: Callable[[], datetime] = utcnow,
) -> DepositState:
    """Approve or reject one of ``merchant_id``'s held deposits; the deposit afterwards.

    ``NotFound`` for another merchant's deposit, ``NotHeld`` unless it is held (a decision
    already made is not made again).
    """
    known = (await get_deposit(db, merchant_id, deposit_id)).deposit

    async def attempt() -> DepositState:
        async with open_recording(db) as store:
            current = (await store.lock([known.ref.key])).get(known.ref.key)
            if current is None or current.merchant_id != merchant_id:
                raise NotFound(f"no deposit {deposit_id}")
            if current.status is not DepositStatus.HELD:
                raise NotHeld(f"deposit {deposit_id} is {current.status}, not held for review")
            now = clock()
            transition = machine.review(current, approve)
            decided = machine.apply(current, transition, now)
            await store.update([decided])
            postings = []
            if transition.posting is not None:
                postings = [(decided.id, e) for e in postings_for(decided, transition.posting)]
            event = deposit_event(new_id("evt"), decided, assets[decided.asset])
            action = "deposit.approved" if approve else "deposit.rejected"
            details = {"held_for": current.reason.code, "status": decided.status.value}
            entry = AuditEntry(actor, action, decided.id, merchant_id, details)
            await store.append_audit(entry, now)
            await store.post_and_append(postings, [event], now)
            await store.commit()
        announce_events(db)
        return decided

    return await retry_transient(attempt)
