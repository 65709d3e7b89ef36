"""Property: whatever sources report, in whatever order, the money stays right.

Hypothesis generates sequences of observations — duplicates, confirmation counts out of order,
removals by reorg (of the right block or a stale one), re-inclusion in another block, provider
status flips, replays — recorded one by one or in batches, against the real engine. After
every sequence: at most one net credit per deposit (exactly one iff it is credited), every
balance equal to the sum of its ledger entries, each posting balanced, versions 1, 2, 3, …
per deposit, and ``seq`` gap-free.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from depositd.db.engine import Database
from depositd.db.tables import deposits, ledger_entries
from depositd.domain.assets import AssetBook
from depositd.domain.deposits import (
    ChainRef,
    Observation,
    ProviderRef,
    ProviderStatus,
    ToAddress,
    ToUser,
)
from depositd.services import merchants, queries, users
from depositd.services.observations import record_observations

from .helpers import CHAIN, ETH

_run = itertools.count()

# a chain transfer: (tx, confirmations, block, removed); a provider report: (id, status)
chain_steps = st.tuples(
    st.integers(0, 2), st.integers(0, 8), st.sampled_from(["0xb1", "0xb2", None]), st.booleans()
)
provider_steps = st.tuples(st.integers(0, 1), st.sampled_from(list(ProviderStatus)))
steps = st.lists(st.one_of(chain_steps, provider_steps), min_size=1, max_size=25)
batch_cuts = st.lists(st.integers(1, 6), min_size=1, max_size=25)

#: tx 2 sends less than the minimum, so it is rejected however confirmed
AMOUNTS = {0: ETH, 1: 3 * ETH, 2: ETH // 10_000}


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=steps, cuts=batch_cuts)
async def test_any_observation_sequence_keeps_the_invariants(
    db: Database, assets: AssetBook, script: list[tuple], cuts: list[int]
) -> None:
    run = next(_run)
    merchant = await merchants.create_merchant(db, f"m{run}")
    await users.ensure_user(db, merchant.id, "u")
    address = f"0x{run:040x}"
    await users.add_address(db, merchant.id, "u", CHAIN, address)

    observations = []
    for step in script:
        if len(step) == 4:
            tx, confirmations, block, removed = step
            observations.append(
                Observation(
                    ref=ChainRef(CHAIN, f"0x{run:032x}{tx:032x}", 0),
                    owner=ToAddress(CHAIN, address),
                    asset="ETH",
                    amount=AMOUNTS[tx],
                    confirmations=0 if removed else confirmations,
                    block_hash=block if removed or confirmations > 0 else None,
                    removed=removed,
                )
            )
        else:
            deposit_id, status = step
            observations.append(
                Observation(
                    ref=ProviderRef(merchant.id, "psp", f"p{deposit_id}"),
                    owner=ToUser(merchant.id, "u"),
                    asset="USDT",
                    amount=5_000_000,
                    provider_status=status,
                )
            )
    start = 0
    for size in itertools.cycle(cuts):
        if start >= len(observations):
            break
        await record_observations(db, assets, observations[start : start + size])
        start += size

    async with db.reader.connect() as conn:
        statuses = dict(
            (
                await conn.execute(
                    select(deposits.c.id, deposits.c.status).where(
                        deposits.c.merchant_id == merchant.id
                    )
                )
            ).all()
        )
        entries = (
            await conn.execute(
                select(
                    ledger_entries.c.deposit_id, ledger_entries.c.kind, ledger_entries.c.generation
                ).where(ledger_entries.c.deposit_id.in_(list(statuses)))
            )
        ).all()
    net_credits: dict[str, int] = defaultdict(int)
    for deposit_id, kind, _generation in set(entries):  # one posting = two entries
        net_credits[deposit_id] += 1 if kind == "credit" else -1
    for deposit_id, status in statuses.items():
        assert net_credits[deposit_id] == (1 if status == "credited" else 0), (deposit_id, status)

    events = await queries.events_after(db, merchant.id, 0, 10_000)
    versions: dict[str, list[int]] = defaultdict(list)
    for event in events:
        versions[event.data["id"]].append(event.data["version"])
    for deposit_versions in versions.values():
        assert deposit_versions == list(range(1, len(deposit_versions) + 1))

    audit = await queries.audit_ledger(db)
    assert audit.mismatched == []
    assert audit.unbalanced_postings == []
    assert audit.seq_gaps == []
