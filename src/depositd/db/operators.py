"""Dashboard operators and their sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from depositd.db.tables import operator_sessions, operators


@dataclass(frozen=True)
class Operator:
    id: str
    merchant_id: str
    email: str
    password_hash: str
    created_at: datetime


_OPERATOR = select(
    operators.c.id,
    operators.c.merchant_id,
    operators.c.email,
    operators.c.password_hash,
    operators.c.created_at,
)


class OperatorRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(
        self, operator_id: str, merchant_id: str, email: str, password_hash: str, now: datetime
    ) -> None:
        await self._conn.execute(
            operators.insert().values(
                id=operator_id,
                merchant_id=merchant_id,
                email=email,
                password_hash=password_hash,
                created_at=now,
            )
        )

    async def by_email(self, email: str) -> Operator | None:
        row = (await self._conn.execute(_OPERATOR.where(operators.c.email == email))).first()
        return None if row is None else Operator(**row._mapping)

    async def set_password(self, operator_id: str, password_hash: str) -> None:
        await self._conn.execute(
            update(operators)
            .where(operators.c.id == operator_id)
            .values(password_hash=password_hash)
        )

    async def add_session(
        self, token_hash: str, operator_id: str, now: datetime, expires_at: datetime
    ) -> None:
        await self._conn.execute(
            operator_sessions.insert().values(
                token_hash=token_hash,
                operator_id=operator_id,
                created_at=now,
                expires_at=expires_at,
            )
        )

    async def session_operator(self, token_hash: str, now: datetime) -> Operator | None:
        """The operator of a live (unexpired, not logged out) session, or None."""
        row = (
            await self._conn.execute(
                _OPERATOR.join(
                    operator_sessions, operator_sessions.c.operator_id == operators.c.id
                ).where(
                    operator_sessions.c.token_hash == token_hash,
                    operator_sessions.c.expires_at > now,
                    operator_sessions.c.revoked_at.is_(None),
                )
            )
        ).first()
        return None if row is None else Operator(**row._mapping)

    async def revoke_session(self, token_hash: str, now: datetime) -> None:
        await self._conn.execute(
            update(operator_sessions)
            .where(
                operator_sessions.c.token_hash == token_hash,
                operator_sessions.c.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
