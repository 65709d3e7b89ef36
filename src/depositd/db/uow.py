"""A unit of work: one transaction that rolls back unless told to commit."""

from __future__ import annotations

from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncConnection

from depositd.db.alerts import AlertRepository, OpsRepository
from depositd.db.audit import AuditRepository
from depositd.db.callbacks import CallbackRepository
from depositd.db.dashboard import DashboardRepository
from depositd.db.end_users import EndUserRepository, KycRepository
from depositd.db.engine import Database
from depositd.db.operators import OperatorRepository
from depositd.db.outbox import DeliveryRepository
from depositd.db.repositories import (
    AccountRepository,
    ChainRepository,
    DepositRepository,
    EndpointRepository,
    EventRepository,
    MerchantRepository,
    OrderRepository,
    UserRepository,
)
from depositd.db.retention import RetentionRepository


class UnitOfWork:
    """``async with UnitOfWork(db, write=True) as uow: ...; await uow.commit()``.

    Everything a use case changes — deposit state, ledger entries, events, outbox rows, its
    audit record — goes through one connection in one transaction. Leaving the block without
    ``commit()`` (an exception, an early return) rolls everything back.
    """

    def __init__(self, db: Database, *, write: bool) -> None:
        self._db = db
        self._engine = db.writer if write else db.reader
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> UnitOfWork:
        conn = await self._engine.connect()
        try:
            await conn.begin()
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self.merchants = MerchantRepository(conn)
        self.users = UserRepository(conn)
        self.deposits = DepositRepository(conn)
        self.accounts = AccountRepository(conn)
        self.events = EventRepository(conn)
        self.endpoints = EndpointRepository(conn)
        self.orders = OrderRepository(conn)
        self.chains = ChainRepository(conn)
        self.deliveries = DeliveryRepository(conn)
        self.callbacks = CallbackRepository(conn)
        self.end_users = EndUserRepository(conn)
        self.kyc = KycRepository(conn)
        self.alerts = AlertRepository(conn)
        self.ops = OpsRepository(conn)
        self.operators = OperatorRepository(conn)
        self.dashboard = DashboardRepository(conn)
        self.audit = AuditRepository(conn)
        self.retention = RetentionRepository(conn)
        return self

    async def commit(self) -> None:
        assert self._conn is not None
        await self._conn.commit()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._conn is not None
        try:
            if self._conn.in_transaction():
                await self._conn.rollback()
        finally:
            await self._conn.close()
            self._conn = None
