"""End users' own accounts: registration, email verification, login sessions.

An account is one of the merchant's users (its ``external_id`` is the account id), so
everything the merchant API shows of users shows of accounts too. Passwords are hashed with
argon2id (RFC 9106's second recommended parameters: 64 MiB, 3 passes, 4 lanes) in a worker
thread; tokens — the one-time verification token and the session token — carry 256 random
bits and are stored only as their SHA-256.

Nothing here tells a caller whether an email address has an account: registering a taken
address and asking for a verification email answer like any other request (the owner of
the address is told by email instead), and a failed login takes as long whether the account
exists or not.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from depositd.clock import utcnow
from depositd.config import EndUsersConfig
from depositd.db.end_users import Account
from depositd.db.engine import Database
from depositd.db.uow import UnitOfWork
from depositd.domain.credentials import check_password, normalize_email
from depositd.errors import DepositdError, InputError
from depositd.ids import new_id
from depositd.mail import EmailSender, compose
from depositd.services.passwords import (
    digest,
    hash_password,
    needs_rehash,
    verify_password,
)

#: session tokens start with this, so leaked ones are easy to spot
SESSION_PREFIX = "dus_"
VERIFY = "verify"


class InvalidToken(InputError):
    slug = "invalid-token"


class UnknownMerchant(InputError):
    slug = "unknown-merchant"


class LoginRefused(DepositdError):
    """A login that did not succeed; ``slug`` says why, in words safe to show."""

    slug = "invalid-credentials"


class EmailNotVerified(LoginRefused):
    slug = "email-not-verified"


class AccountLocked(LoginRefused):
    slug = "account-locked"

    def __init__(self, message: str, retry_after: timedelta) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Session:
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class EndUsers:
    """The end-user account service, with its settings and email sender."""

    db: Database
    settings: EndUsersConfig
    mailer: EmailSender
    from_address: str
    clock: Callable[[], datetime] = utcnow

    async def register(self, merchant_id: str, email: str, password: str) -> str:
        """Open an account and email its verification token; the address, as stored.

        A taken address is not an error the caller sees: its owner gets an email saying so
        (or, still unverified, a new token).
        """
        address = normalize_email(email)
        check_password(password, address)
        password_hash = await asyncio.to_thread(hash_password, password)
        try:
            token = await self._open(merchant_id, address, password_hash)
        except IntegrityError:  # the same address registered at the same moment: it is taken
            return address
        if token is None:
            await self._send(
                address,
                "Someone tried to register with your address",
                "An account with this email address already exists. If that was you, log in"
                " instead; if not, you need not do anything.",
            )
        else:
            await self._send_token(address, token)
        return address

    async def _open(self, merchant_id: str, address: str, password_hash: str) -> str | None:
        """A new account's verification token; for a taken address, None (or, unverified,
        a new token)."""
        async with UnitOfWork(self.db, write=True) as uow:
            if await uow.merchants.get(merchant_id) is None:
                raise UnknownMerchant(f"no merchant {merchant_id!r}")
            existing = await uow.end_users.by_email(merchant_id, address)
            if existing is None:
                account_id = new_id("eu")
                await uow.end_users.add(
                    account_id, merchant_id, new_id("usr"), address, password_hash, self.clock()
                )
                token = await self._new_token(uow, account_id)
            elif existing.email_verified_at is None:
                token = await self._new_token(uow, existing.id)
            else:
                token = None
            await uow.commit()
        return token

    async def resend_verification(self, merchant_id: str, email: str) -> str:
        """A new verification token for an unverified account; nothing for any other address.
        The address, as stored."""
        address = normalize_email(email)
        async with UnitOfWork(self.db, write=True) as uow:
            account = await uow.end_users.by_email(merchant_id, address)
            if account is None or account.email_verified_at is not None:
                return address
            token = await self._new_token(uow, account.id)
            await uow.commit()
        await self._send_token(address, token)
        return address

    async def verify_email(self, token: str) -> Account:
        now = self.clock()
        async with UnitOfWork(self.db, write=True) as uow:
            account_id = await uow.end_users.use_token(digest(token), VERIFY, now)
            if account_id is None:
                raise InvalidToken("the token is unknown, used or expired; ask for a new email")
            await uow.end_users.set_verified(account_id, now)
            account = await uow.end_users.get(account_id)
            await uow.commit()
        assert account is not None
        return account

    async def login(self, merchant_id: str, email: str, password: str) -> Session:
        try:
            address = normalize_email(email)
        except InputError:
            raise LoginRefused("the email or the password is wrong") from None
        async with UnitOfWork(self.db, write=False) as uow:
            account = await uow.end_users.by_email(merchant_id, address)
        now = self.clock()
        locked_until = account.locked_until if account is not None else None
        if locked_until is not None and locked_until > now:
            raise AccountLocked("too many failed logins; try again later", locked_until - now)
        matches = await asyncio.to_thread(
            verify_password, account.password_hash if account else None, password
        )
        if account is None:
            raise LoginRefused("the email or the password is wrong")
        if not matches:
            lock = timedelta(minutes=self.settings.lockout_minutes)
            async with UnitOfWork(self.db, write=True) as uow:
                locked = await uow.end_users.failed_login(
                    account.id, self.settings.max_failed_logins, now + lock
                )
                await uow.commit()
            if locked:
                raise AccountLocked("too many failed logins; try again later", lock)
            raise LoginRefused("the email or the password is wrong")
        if account.email_verified_at is None:
            raise EmailNotVerified("verify your email address first (see the email we sent)")
        rehash = needs_rehash(account.password_hash)
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        expires_at = now + timedelta(hours=self.settings.session_hours)
        async with UnitOfWork(self.db, write=True) as uow:
            await uow.end_users.logged_in(
                account.id, await asyncio.to_thread(hash_password, password) if rehash else None
            )
            await uow.end_users.add_session(digest(token), account.id, now, expires_at)
            await uow.commit()
        return Session(token, expires_at)

    async def logout(self, token: str) -> None:
        async with UnitOfWork(self.db, write=True) as uow:
            await uow.end_users.revoke_session(digest(token), self.clock())
            await uow.commit()

    async def authenticate(self, token: str) -> Account | None:
        """The account a live session token belongs to, or None."""
        if not token.startswith(SESSION_PREFIX):
            return None
        async with UnitOfWork(self.db, write=False) as uow:
            return await uow.end_users.session_account(digest(token), self.clock())

    async def _new_token(self, uow: UnitOfWork, account_id: str) -> str:
        token = secrets.token_urlsafe(32)
        now = self.clock()
        expires_at = now + timedelta(hours=self.settings.verify_token_hours)
        await uow.end_users.add_token(digest(token), account_id, VERIFY, now, expires_at)
        return token

    async def _send_token(self, address: str, token: str) -> None:
        hours = self.settings.verify_token_hours
        lines = [f"Your verification token is: {token}", ""]
        if self.settings.verify_url is not None:
            lines += ["Or open:", self.settings.verify_url.replace("{token}", token), ""]
        lines.append(f"It works once, within {hours:g} hours.")
        await self._send(address, "Verify your email address", "\n".join(lines))

    async def _send(self, address: str, subject: str, text: str) -> None:
        await self.mailer.send(compose(self.from_address, address, subject, text))
