"""KYC: end users submit their personal details for a level; operators approve or reject.

The personal fields are sealed (``depositd.sealing``) before they reach the database and
opened only for the merchant's operators reviewing them. An approval sets the user's KYC
level, which the engine's deposit limits read (``domain.limits``); a rejection carries a
reason the user sees. One submission at a time waits for review. Each decision is appended
to the audit log, by the reviewing operator's key, in the transaction that makes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from depositd.clock import utcnow
from depositd.db.end_users import APPROVED, PENDING, REJECTED, Account, Submission
from depositd.db.engine import Database
from depositd.db.uow import UnitOfWork
from depositd.domain.audit import AuditEntry
from depositd.errors import Conflict, DepositdError, InputError, NotFound
from depositd.ids import new_id
from depositd.sealing import Sealer


class KycNotConfigured(DepositdError):
    """No key to seal personal data with: KYC submissions cannot be stored."""


class KycPending(Conflict):
    slug = "kyc-pending"


class KycDecided(Conflict):
    slug = "kyc-decided"


class InvalidLevel(InputError):
    slug = "invalid-kyc-level"


@dataclass(frozen=True)
class Reviewed:
    """A submission with its personal fields opened, for the merchant's operators."""

    submission: Submission
    fields: dict[str, Any]


@dataclass(frozen=True)
class Kyc:
    db: Database
    #: None when no key is configured: submissions are refused
    sealer: Sealer | None
    clock: Callable[[], datetime] = utcnow

    async def submit(self, account: Account, level: int, fields: dict[str, Any]) -> Submission:
        if self.sealer is None:
            raise KycNotConfigured("KYC is not set up on this server (no end_users.kyc_key)")
        if level <= account.kyc_level:
            raise InvalidLevel(
                f"you are at level {account.kyc_level} already; ask for a higher one"
            )
        submission_id = new_id("kyc")
        sealed = self.sealer.seal(json.dumps(fields).encode(), submission_id)
        async with UnitOfWork(self.db, write=True) as uow:
            earlier = await uow.kyc.of_account(account.id)
            if any(s.status == PENDING for s in earlier):
                raise KycPending("a submission of yours is waiting for review")
            await uow.kyc.add(
                submission_id, account.merchant_id, account.id, level, sealed, self.clock()
            )
            found = await uow.kyc.get(account.merchant_id, submission_id)
            try:
                await uow.commit()
            except IntegrityError:  # another submission committed meanwhile
                raise KycPending("a submission of yours is waiting for review") from None
        assert found is not None
        return found

    async def of_account(self, account: Account) -> list[Submission]:
        async with UnitOfWork(self.db, write=False) as uow:
            return await uow.kyc.of_account(account.id)

    async def page(
        self, merchant_id: str, status: str | None, before: str | None, limit: int
    ) -> list[Reviewed]:
        async with UnitOfWork(self.db, write=False) as uow:
            found = await uow.kyc.page(merchant_id, status, before, limit)
        return [self._open(s) for s in found]

    async def get(self, merchant_id: str, submission_id: str) -> Reviewed:
        async with UnitOfWork(self.db, write=False) as uow:
            found = await uow.kyc.get(merchant_id, submission_id)
        if found is None:
            raise NotFound(f"no KYC submission {submission_id}")
        return self._open(found)

    async def approve(
        self, merchant_id: str, submission_id: str, level: int | None, *, actor: str
    ) -> Reviewed:
        """Grant ``level`` (default: the level asked for) and raise the user to it."""
        async with UnitOfWork(self.db, write=True) as uow:
            found = await self._pending(uow, merchant_id, submission_id)
            granted = found.level if level is None else level
            if not 1 <= granted <= 100:
                raise InvalidLevel("a granted level is between 1 and 100")
            account = await uow.end_users.get(found.end_user_id)
            assert account is not None
            now = self.clock()
            if not await uow.kyc.decide(submission_id, APPROVED, now, granted_level=granted):
                raise KycDecided(f"{submission_id} was decided meanwhile")
            await uow.kyc.set_level(account.user_id, max(account.kyc_level, granted))
            decided = await uow.kyc.get(merchant_id, submission_id)
            details = {"end_user_id": found.end_user_id, "asked_level": found.level,
                       "granted_level": granted}  # fmt: skip
            await uow.audit.append(
                AuditEntry(actor, "kyc.approved", submission_id, merchant_id, details), now
            )
            await uow.commit()
        assert decided is not None
        return self._open(decided)

    async def reject(
        self, merchant_id: str, submission_id: str, reason: str, *, actor: str
    ) -> Reviewed:
        async with UnitOfWork(self.db, write=True) as uow:
            found = await self._pending(uow, merchant_id, submission_id)
            now = self.clock()
            if not await uow.kyc.decide(submission_id, REJECTED, now, reason=reason):
                raise KycDecided(f"{submission_id} was decided meanwhile")
            decided = await uow.kyc.get(merchant_id, submission_id)
            # the reason is shown to the user and holds no personal field
            details = {"end_user_id": found.end_user_id, "reason": reason}
            await uow.audit.append(
                AuditEntry(actor, "kyc.rejected", submission_id, merchant_id, details), now
            )
            await uow.commit()
        assert decided is not None
        return self._open(decided)

    @staticmethod
    async def _pending(uow: UnitOfWork, merchant_id: str, submission_id: str) -> Submission:
        found = await uow.kyc.get(merchant_id, submission_id)
        if found is None:
            raise NotFound(f"no KYC submission {submission_id}")
        if found.status != PENDING:
            raise KycDecided(f"{submission_id} was {found.status} already")
        return found

    def _open(self, submission: Submission) -> Reviewed:
        if self.sealer is None:
            raise KycNotConfigured("KYC is not set up on this server (no end_users.kyc_key)")
        fields = json.loads(self.sealer.open(submission.sealed, submission.id))
        return Reviewed(submission, fields)
