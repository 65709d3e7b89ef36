"""Merchants and their API keys: random, shown once, stored as a hash, revocable."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from depositd.clock import utcnow
from depositd.db.engine import Database
from depositd.db.uow import UnitOfWork
from depositd.domain.audit import CLI_ACTOR, AuditEntry, api_key_actor
from depositd.errors import NotFound
from depositd.ids import new_id
from depositd.services.passwords import digest

#: every key starts with this, so leaked keys are easy to spot by secret scanners
KEY_PREFIX = "dpk_"


@dataclass(frozen=True)
class Merchant:
    id: str
    name: str


@dataclass(frozen=True)
class IssuedKey:
    """A new API key. ``secret`` exists only here: it is never stored or shown again."""

    id: str
    merchant_id: str
    secret: str


@dataclass(frozen=True)
class KeyHolder:
    """Whom a request's API key authorises: the merchant, through which of its keys."""

    merchant_id: str
    key_id: str

    @property
    def actor(self) -> str:
        """How the audit log names the caller."""
        return api_key_actor(self.key_id)


async def create_merchant(db: Database, name: str) -> Merchant:
    merchant = Merchant(new_id("mer"), name)
    async with UnitOfWork(db, write=True) as uow:
        await uow.merchants.add(merchant.id, merchant.name, utcnow())
        await uow.commit()
    return merchant


async def list_merchants(db: Database) -> list[Merchant]:
    async with UnitOfWork(db, write=False) as uow:
        return [Merchant(row.id, row.name) for row in await uow.merchants.all()]


async def create_api_key(
    db: Database, merchant_id: str, label: str = "", *, actor: str = CLI_ACTOR
) -> IssuedKey:
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = IssuedKey(new_id("key"), merchant_id, secret)
    prefix = secret[: len(KEY_PREFIX) + 6]
    async with UnitOfWork(db, write=True) as uow:
        if await uow.merchants.get(merchant_id) is None:
            raise NotFound(f"no merchant {merchant_id}")
        now = utcnow()
        await uow.merchants.add_api_key(key.id, merchant_id, label, prefix, digest(secret), now)
        details = {"label": label, "prefix": prefix}
        await uow.audit.append(
            AuditEntry(actor, "api_key.created", key.id, merchant_id, details), now
        )
        await uow.commit()
    return key


async def revoke_api_key(db: Database, key_id: str, *, actor: str = CLI_ACTOR) -> None:
    async with UnitOfWork(db, write=True) as uow:
        now = utcnow()
        merchant_id = await uow.merchants.revoke_api_key(key_id, now)
        if merchant_id is None:
            raise NotFound(f"no active API key {key_id}")
        await uow.audit.append(AuditEntry(actor, "api_key.revoked", key_id, merchant_id), now)
        await uow.commit()


async def authenticate(db: Database, secret: str) -> KeyHolder | None:
    """The merchant and key an API key is, or None for an unknown or revoked key."""
    if not secret.startswith(KEY_PREFIX):
        return None
    async with UnitOfWork(db, write=False) as uow:
        row = await uow.merchants.key_holder(digest(secret))
    return None if row is None else KeyHolder(row.merchant_id, row.id)
