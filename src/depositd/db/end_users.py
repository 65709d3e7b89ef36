"""End users' accounts, email tokens, sessions and KYC submissions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from depositd.db.tables import (
    email_tokens,
    end_user_sessions,
    end_users,
    kyc_submissions,
    users,
)

#: ``kyc_submissions.status``
PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"


@dataclass(frozen=True)
class Account:
    id: str
    merchant_id: str
    user_id: str
    email: str
    password_hash: str
    created_at: datetime
    email_verified_at: datetime | None
    failed_logins: int
    locked_until: datetime | None
    kyc_level: int


@dataclass(frozen=True)
class Submission:
    id: str
    merchant_id: str
    end_user_id: str
    #: the merchant's id for the user (``end_users.id``)
    external_id: str
    email: str
    level: int
    sealed: bytes
    status: str
    submitted_at: datetime
    decided_at: datetime | None
    granted_level: int | None
    reason: str | None


_ACCOUNT = select(
    end_users.c.id,
    end_users.c.merchant_id,
    end_users.c.user_id,
    end_users.c.email,
    end_users.c.password_hash,
    end_users.c.created_at,
    end_users.c.email_verified_at,
    end_users.c.failed_logins,
    end_users.c.locked_until,
    users.c.kyc_level,
).join(users, users.c.id == end_users.c.user_id)

_SUBMISSION = select(
    kyc_submissions.c.id,
    kyc_submissions.c.merchant_id,
    kyc_submissions.c.end_user_id,
    users.c.external_id,
    end_users.c.email,
    kyc_submissions.c.level,
    kyc_submissions.c.sealed,
    kyc_submissions.c.status,
    kyc_submissions.c.submitted_at,
    kyc_submissions.c.decided_at,
    kyc_submissions.c.granted_level,
    kyc_submissions.c.reason,
).select_from(
    kyc_submissions.join(end_users, end_users.c.id == kyc_submissions.c.end_user_id).join(
        users, users.c.id == end_users.c.user_id
    )
)


class EndUserRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(
        self,
        account_id: str,
        merchant_id: str,
        user_id: str,
        email: str,
        password_hash: str,
        now: datetime,
    ) -> None:
        """The account and the merchant's user it is (known by the account's id)."""
        await self._conn.execute(
            users.insert().values(
                id=user_id, merchant_id=merchant_id, external_id=account_id, created_at=now
            )
        )
        await self._conn.execute(
            end_users.insert().values(
                id=account_id,
                merchant_id=merchant_id,
                user_id=user_id,
                email=email,
                password_hash=password_hash,
                created_at=now,
            )
        )

    async def by_email(self, merchant_id: str, email: str) -> Account | None:
        stmt = _ACCOUNT.where(end_users.c.merchant_id == merchant_id, end_users.c.email == email)
        row = (await self._conn.execute(stmt)).one_or_none()
        return None if row is None else Account(**row._mapping)

    async def get(self, account_id: str) -> Account | None:
        row = (await self._conn.execute(_ACCOUNT.where(end_users.c.id == account_id))).one_or_none()
        return None if row is None else Account(**row._mapping)

    async def set_verified(self, account_id: str, now: datetime) -> None:
        await self._conn.execute(
            update(end_users)
            .where(end_users.c.id == account_id, end_users.c.email_verified_at.is_(None))
            .values(email_verified_at=now)
        )

    async def failed_login(self, account_id: str, limit: int, lock_until: datetime) -> bool:
        """Count a failed login; True when it reached the limit and locked the account."""
        row = (
            await self._conn.execute(
                update(end_users)
                .where(end_users.c.id == account_id)
                .values(failed_logins=end_users.c.failed_logins + 1)
                .returning(end_users.c.failed_logins)
            )
        ).one()
        if row.failed_logins < limit:
            return False
        await self._conn.execute(
            update(end_users)
            .where(end_users.c.id == account_id)
            .values(failed_logins=0, locked_until=lock_until)
        )
        return True

    async def logged_in(self, account_id: str, password_hash: str | None) -> None:
        values: dict[str, Any] = {"failed_logins": 0, "locked_until": None}
        if password_hash is not None:  # rehashed with current parameters
            values["password_hash"] = password_hash
        await self._conn.execute(
            update(end_users).where(end_users.c.id == account_id).values(**values)
        )

    async def add_token(
        self, token_hash: str, account_id: str, purpose: str, now: datetime, expires_at: datetime
    ) -> None:
        await self._conn.execute(
            email_tokens.insert().values(
                token_hash=token_hash,
                end_user_id=account_id,
                purpose=purpose,
                created_at=now,
                expires_at=expires_at,
            )
        )

    async def use_token(self, token_hash: str, purpose: str, now: datetime) -> str | None:
        """Spend an unexpired, unused token: the account it was for, or None."""
        row = (
            await self._conn.execute(
                update(email_tokens)
                .where(
                    email_tokens.c.token_hash == token_hash,
                    email_tokens.c.purpose == purpose,
                    email_tokens.c.used_at.is_(None),
                    email_tokens.c.expires_at > now,
                )
                .values(used_at=now)
                .returning(email_tokens.c.end_user_id)
            )
        ).one_or_none()
        return None if row is None else str(row.end_user_id)

    async def add_session(
        self, token_hash: str, account_id: str, now: datetime, expires_at: datetime
    ) -> None:
        await self._conn.execute(
            end_user_sessions.insert().values(
                token_hash=token_hash, end_user_id=account_id, created_at=now, expires_at=expires_at
            )
        )

    async def session_account(self, token_hash: str, now: datetime) -> Account | None:
        stmt = _ACCOUNT.join(
            end_user_sessions, end_user_sessions.c.end_user_id == end_users.c.id
        ).where(
            end_user_sessions.c.token_hash == token_hash,
            end_user_sessions.c.revoked_at.is_(None),
            end_user_sessions.c.expires_at > now,
        )
        row = (await self._conn.execute(stmt)).one_or_none()
        return None if row is None else Account(**row._mapping)

    async def revoke_session(self, token_hash: str, now: datetime) -> None:
        await self._conn.execute(
            update(end_user_sessions)
            .where(end_user_sessions.c.token_hash == token_hash)
            .values(revoked_at=now)
        )


class KycRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(
        self,
        submission_id: str,
        merchant_id: str,
        account_id: str,
        level: int,
        sealed: bytes,
        now: datetime,
    ) -> None:
        await self._conn.execute(
            kyc_submissions.insert().values(
                id=submission_id,
                merchant_id=merchant_id,
                end_user_id=account_id,
                level=level,
                sealed=sealed,
                status=PENDING,
                submitted_at=now,
            )
        )

    async def of_account(self, account_id: str) -> list[Submission]:
        stmt = _SUBMISSION.where(kyc_submissions.c.end_user_id == account_id).order_by(
            kyc_submissions.c.id.desc()  # ids sort by creation time
        )
        return [Submission(**row._mapping) for row in await self._conn.execute(stmt)]

    async def page(
        self, merchant_id: str, status: str | None, before: str | None, limit: int
    ) -> Sequence[Submission]:
        """The merchant's submissions, newest first, after the cursor (an id)."""
        where = [kyc_submissions.c.merchant_id == merchant_id]
        if status is not None:
            where.append(kyc_submissions.c.status == status)
        if before is not None:
            where.append(kyc_submissions.c.id < before)
        stmt = _SUBMISSION.where(and_(*where)).order_by(kyc_submissions.c.id.desc()).limit(limit)
        return [Submission(**row._mapping) for row in await self._conn.execute(stmt)]

    async def get(self, merchant_id: str, submission_id: str) -> Submission | None:
        stmt = _SUBMISSION.where(
            kyc_submissions.c.merchant_id == merchant_id, kyc_submissions.c.id == submission_id
        )
        row = (await self._conn.execute(stmt)).one_or_none()
        return None if row is None else Submission(**row._mapping)

    async def decide(
        self,
        submission_id: str,
        status: str,
        now: datetime,
        *,
        granted_level: int | None = None,
        reason: str | None = None,
    ) -> bool:
        """Settle a pending submission; False when it was already decided."""
        result = await self._conn.execute(
            update(kyc_submissions)
            .where(kyc_submissions.c.id == submission_id, kyc_submissions.c.status == PENDING)
            .values(status=status, decided_at=now, granted_level=granted_level, reason=reason)
        )
        return result.rowcount == 1

    async def set_level(self, user_id: str, level: int) -> None:
        await self._conn.execute(update(users).where(users.c.id == user_id).values(kyc_level=level))
