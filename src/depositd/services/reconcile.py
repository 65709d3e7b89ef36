"""Missed-callback recovery (补单) and the report of what disagrees.

Providers lose callbacks, and so do networks. ``reconcile`` looks for what should have moved
by now and did not:

* accepted callbacks still unprocessed after the SLA are processed (``process_callbacks``);
* a provider's deposits still pending or confirming after the SLA, and the payments of card
  and bank transfer orders it was asked to start (within the report window) that no callback
  has mentioned after the SLA, are looked up at the provider's status API
  (``[providers.NAME.status]``); the answer is read with the provider's mapping and recorded
  through the same entry point as a callback (checked against our node where we watch the
  chain), so a late answer changes nothing twice;

and then compares sums: every ledger account's cached balance with the sum of its entries,
every posting's entries with zero, and, over the report window, what each provider last
claimed succeeded with what was credited here.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import aiohttp
import structlog

from depositd.clock import utcnow
from depositd.config import Config
from depositd.db.engine import Database
from depositd.db.uow import UnitOfWork
from depositd.domain.assets import AssetBook
from depositd.domain.deposits import DepositStatus, ProviderRef, ProviderStatus
from depositd.providers.mapping import PayloadRejected, ProviderClaim, read_claim
from depositd.providers.payments import token_headers
from depositd.services.callbacks import (
    CallbackLog,
    ClaimVerifier,
    Provider,
    process_callbacks,
    providers_from,
    settle_claim,
)
from depositd.services.group_commit import Recorder

log = structlog.get_logger("depositd.reconcile")

#: most overdue deposits asked about per provider and run
_BATCH = 500
#: what we knew of a payment no callback has mentioned
_NO_CALLBACK = "no_callback"


@dataclass(frozen=True)
class Recovered:
    """An overdue deposit the provider's status API told us more about."""

    provider: str
    provider_deposit_id: str
    before: str
    #: the deposit's status now, ``unchanged``, or why the answer could not be used
    after: str


@dataclass(frozen=True)
class Mismatch:
    """Two sums (or states) that should agree and do not."""

    kind: str
    subject: str
    expected: str
    actual: str


@dataclass
class ReconcileReport:
    #: stored callbacks processed late
    processed: int = 0
    recovered: list[Recovered] = field(default_factory=list)
    #: provider deposits whose status could not be learned (API down, bad answer)
    unanswered: list[str] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)


class StatusClient:
    """Asks a provider's status API about one deposit (plain HTTP: operators configure it)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def status(self, provider: Provider, cfg: Config, deposit_id: str) -> object:
        api = cfg.providers[provider.name].status
        assert api is not None
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = token_headers(api.token_header, api.token)
        url = api.url.replace("{deposit_id}", deposit_id)
        timeout = aiohttp.ClientTimeout(total=api.timeout_seconds)
        async with self._session.get(url, headers=headers, timeout=timeout) as response:
            if response.status != 200:
                raise StatusUnavailable(f"HTTP {response.status} from {provider.name}")
            return json.loads(await response.read(), parse_float=Decimal)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class StatusUnavailable(Exception):
    """The provider did not say (an error status, no answer, not JSON)."""


async def reconcile(
    db: Database,
    config: Config,
    assets: AssetBook,
    *,
    sla: timedelta | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> ReconcileReport:
    """One reconciliation run (see the module docstring); the report of what it did and found."""
    sla = sla if sla is not None else timedelta(seconds=config.reconcile.sla_seconds)
    providers = providers_from(config)
    callbacks = CallbackLog(db)
    recorder = Recorder(db, assets)
    verifier = ClaimVerifier(config, assets)
    client = StatusClient()
    report = ReconcileReport()
    try:
        processed = await process_callbacks(
            callbacks, recorder, verifier=verifier, older_than=sla, clock=clock
        )
        report.processed = len(processed)
        window = timedelta(days=config.reconcile.window_days)
        for provider in providers.values():
            if config.providers[provider.name].status is not None:
                await _ask_about_overdue(
                    db, config, assets, provider, client, recorder, verifier, clock() - sla,
                    clock() - window, report,
                )  # fmt: skip
        report.mismatches = await compare_sums(db, providers, clock() - window, clock() - sla)
    finally:
        await client.close()
        await verifier.close()
    return report


async def _ask_about_overdue(
    db: Database,
    config: Config,
    assets: AssetBook,
    provider: Provider,
    client: StatusClient,
    recorder: Recorder,
    verifier: ClaimVerifier,
    changed_before: datetime,
    since: datetime,
    report: ReconcileReport,
) -> None:
    async with UnitOfWork(db, write=False) as uow:
        overdue = await uow.deposits.overdue_from_provider(
            provider.merchant_id, provider.name, changed_before, _BATCH
        )
        # card and bank transfer payments the provider never called back about at all
        silent = await uow.orders.silent_payments(
            provider.merchant_id, provider.name, changed_before, since, _BATCH
        )
    asked: list[tuple[str, str]] = []
    for deposit in overdue:
        assert isinstance(deposit.ref, ProviderRef)
        asked.append((deposit.ref.deposit_id, deposit.status.value))
    asked.extend((reference, _NO_CALLBACK) for reference in silent)
    for theirs, before in asked:
        try:
            answer = await client.status(provider, config, theirs)
            claim = read_claim(provider.mapping, assets, answer, f"reconcile:{theirs}")
        except (StatusUnavailable, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("provider status unavailable", provider=provider.name,
                        deposit=theirs, error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            report.unanswered.append(f"{provider.name}:{theirs}")
            continue
        except PayloadRejected as exc:
            report.recovered.append(Recovered(provider.name, theirs, before, exc.code))
            continue
        if claim.deposit_id != theirs:
            report.recovered.append(
                Recovered(provider.name, theirs, before, "answer_for_another_deposit")
            )
            continue
        if before == _NO_CALLBACK and claim.status is ProviderStatus.PENDING:
            # not paid yet: nothing to record (a pending deposit would say money is coming)
            report.recovered.append(Recovered(provider.name, theirs, before, "not_paid_yet"))
            continue
        # recorded through the same entry point as a callback, checked on chain too
        settled = await settle_claim(
            db, recorder, verifier, claim, provider.merchant_id, provider.name
        )
        after = settled.result if settled.final else f"waiting ({settled.result})"
        report.recovered.append(Recovered(provider.name, theirs, before, after))


async def compare_sums(
    db: Database,
    providers: Mapping[str, Provider],
    since: datetime,
    settled_before: datetime,
    *,
    merchant_id: str | None = None,
) -> list[Mismatch]:
    """What disagrees: account caches, postings, and providers' claims against credits
    (with ``merchant_id``: that merchant's only). Reads only: safe to run at any time.

    Claims are those received from ``since`` to before ``settled_before`` (now less the SLA):
    a claim younger than that may still be on its way (acknowledged, its recording not yet
    committed; a chain deposit waiting for our node's confirmations), which is not a
    disagreement."""
    found: list[Mismatch] = []
    async with UnitOfWork(db, write=False) as uow:
        for audit in await uow.accounts.audit(merchant_id):
            if audit.cached is not None and audit.cached != audit.summed:
                found.append(Mismatch("account_balance", audit.key,
                                      str(audit.summed), str(audit.cached)))  # fmt: skip
        for deposit_id, kind, generation in await uow.accounts.unbalanced_postings(merchant_id):
            found.append(Mismatch("unbalanced_posting", f"{deposit_id}:{kind}:{generation}",
                                  "0", "not 0"))  # fmt: skip
        claims = await uow.callbacks.claims_since(since, settled_before, merchant_id)
        latest: dict[tuple[str, str, str], ProviderClaim] = {}
        for callback in claims:
            claim = ProviderClaim.from_dict(callback.claim)
            latest[(callback.merchant_id, callback.provider, claim.deposit_id)] = claim
        by_provider: dict[tuple[str, str], list[ProviderClaim]] = defaultdict(list)
        for (merchant_id, provider, _), claim in latest.items():
            if claim.status is ProviderStatus.SUCCEEDED:
                by_provider[(merchant_id, provider)].append(claim)
        for (merchant_id, provider), succeeded in by_provider.items():
            ours = await uow.deposits.from_provider(
                merchant_id, provider, [c.deposit_id for c in succeeded]
            )
            claimed: dict[str, int] = defaultdict(int)
            credited: dict[str, int] = defaultdict(int)
            for claim in succeeded:
                claimed[claim.asset] += claim.amount
                deposit = ours.get(claim.deposit_id)
                if deposit is not None and deposit.status is DepositStatus.CREDITED:
                    credited[claim.asset] += deposit.amount
                    continue
                state = deposit.status.value if deposit is not None else "missing"
                found.append(Mismatch("provider_claim", f"{provider}:{claim.deposit_id}",
                                      "credited", state))  # fmt: skip
            for asset, total in claimed.items():
                if credited[asset] != total:
                    found.append(Mismatch("provider_sum", f"{provider}:{asset}",
                                          str(total), str(credited[asset])))  # fmt: skip
    return found
