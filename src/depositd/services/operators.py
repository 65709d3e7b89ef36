"""Dashboard operators: who they are, their passwords, their login sessions.

An operator acts for one merchant and sees only that merchant's data. Operators sign in on
one form, so an email address names one operator across the whole service. A session id
carries 256 random bits and is stored only as its SHA-256; a failed login takes as long
whether the address has an operator or not.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from depositd.clock import utcnow
from depositd.db.engine import Database
from depositd.db.operators import Operator
from depositd.db.uow import UnitOfWork
from depositd.domain.audit import CLI_ACTOR, AuditEntry
from depositd.domain.credentials import check_password, normalize_email
from depositd.errors import Conflict, DepositdError, InputError, NotFound
from depositd.ids import new_id
from depositd.services.passwords import digest, hash_password, verify_password

#: how long a dashboard session lasts
SESSION_HOURS = 12.0


class OperatorExists(Conflict):
    slug = "operator-exists"


class LoginRefused(DepositdError):
    slug = "invalid-credentials"


@dataclass(frozen=True)
class OperatorSession:
    #: the session id (the cookie signs it); never stored
    token: str
    operator: Operator
    expires_at: datetime


async def add_operator(
    db: Database,
    merchant_id: str,
    email: str,
    password: str,
    *,
    reset_password: bool = False,
    actor: str = CLI_ACTOR,
    clock: Callable[[], datetime] = utcnow,
) -> Operator:
    """A new operator of ``merchant_id``; ``OperatorExists`` when the address is taken, unless
    ``reset_password`` (the same merchant's operator then gets the new password)."""
    address = normalize_email(email)
    check_password(password, address)
    password_hash = await asyncio.to_thread(hash_password, password)
    async with UnitOfWork(db, write=True) as uow:
        if await uow.merchants.get(merchant_id) is None:
            raise NotFound(f"no merchant {merchant_id}")
        existing = await uow.operators.by_email(address)
        if existing is not None and not (reset_password and existing.merchant_id == merchant_id):
            raise OperatorExists(f"{address} is already an operator")
        now = clock()
        if existing is not None:
            await uow.operators.set_password(existing.id, password_hash)
            action, operator_id = "operator.password_reset", existing.id
        else:
            operator_id = new_id("op")
            await uow.operators.add(operator_id, merchant_id, address, password_hash, now)
            action = "operator.created"
        details = {"email": address}
        await uow.audit.append(AuditEntry(actor, action, operator_id, merchant_id, details), now)
        found = await uow.operators.by_email(address)
        await uow.commit()
    assert found is not None
    return found


async def login(
    db: Database,
    email: str,
    password: str,
    *,
    session_hours: float = SESSION_HOURS,
    clock: Callable[[], datetime] = utcnow,
) -> OperatorSession:
    """A new session for the operator, or ``LoginRefused`` (the same for any wrong part)."""
    try:
        address = normalize_email(email)
    except InputError:
        address = None
    operator = None
    if address is not None:
        async with UnitOfWork(db, write=False) as uow:
            operator = await uow.operators.by_email(address)
    known = operator.password_hash if operator is not None else None
    matches = await asyncio.to_thread(verify_password, known, password)
    if operator is None or not matches:
        raise LoginRefused("the email or the password is wrong")
    token = secrets.token_urlsafe(32)
    now = clock()
    expires_at = now + timedelta(hours=session_hours)
    async with UnitOfWork(db, write=True) as uow:
        await uow.operators.add_session(digest(token), operator.id, now, expires_at)
        await uow.commit()
    return OperatorSession(token, operator, expires_at)


async def session_operator(
    db: Database, token: str, *, clock: Callable[[], datetime] = utcnow
) -> Operator | None:
    """The operator whose live session this is, or None."""
    async with UnitOfWork(db, write=False) as uow:
        return await uow.operators.session_operator(digest(token), clock())


async def logout(db: Database, token: str, *, clock: Callable[[], datetime] = utcnow) -> None:
    async with UnitOfWork(db, write=True) as uow:
        await uow.operators.revoke_session(digest(token), clock())
        await uow.commit()
