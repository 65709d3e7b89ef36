"""The audit log: every security and operator action appends one record to a hash chain, in
the action's own transaction, and ``depositd audit verify`` finds the first tampered row."""

from __future__ import annotations

import asyncio
import email
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select, update

from depositd.app import create_app
from depositd.clock import utcnow
from depositd.config import Config
from depositd.db.engine import Database
from depositd.db.tables import audit_head, audit_log, endpoints
from depositd.db.uow import UnitOfWork
from depositd.domain.audit import AuditEntry
from depositd.services import merchants
from depositd.services.audit import verify_audit_log

from .test_cli import depositd
from .test_end_users import PASSWORD, end_user_config
from .test_endpoints_api import HOOK


async def audit_rows(db: Database) -> list[Any]:
    async with db.reader.connect() as conn:
        return list((await conn.execute(select(audit_log).order_by(audit_log.c.seq))).all())


def environment(db: Database) -> dict[str, str]:
    return {"DEPOSITD_DATABASE__URL": db.url.render_as_string(hide_password=False)}


async def append(db: Database, count: int) -> None:
    for n in range(count):
        async with UnitOfWork(db, write=True) as uow:
            entry = AuditEntry("cli", "api_key.created", f"key_{n}", "mer_1", {"n": n})
            await uow.audit.append(entry, utcnow())
            await uow.commit()


@pytest.fixture
async def operator(
    db: Database, config: Config, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, str, str]]:
    """A client with a merchant's API key, the merchant's id and the key's id; USDT deposits
    over 100 are held (level 0), KYC works."""
    app = create_app(end_user_config(config, tmp_path), db)
    merchant = await merchants.create_merchant(db, "acme")
    key = await merchants.create_api_key(db, merchant.id, "ops")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://depositd.test",
        headers={"Authorization": f"Bearer {key.secret}"},
    ) as client:
        yield client, merchant.id, key.id


async def test_every_operator_action_appends_one_record(
    db: Database, operator: tuple[httpx.AsyncClient, str, str], tmp_path: Path
) -> None:
    client, merchant_id, key_id = operator
    env = environment(db)
    issued = depositd("api-keys", "create", "--merchant", merchant_id, cwd=tmp_path, env=env)
    assert issued.returncode == 0, issued.stderr
    cli_key, cli_secret = issued.stdout.split()[1], issued.stdout.split()[3]
    assert (depositd("api-keys", "revoke", cli_key, cwd=tmp_path, env=env)).returncode == 0

    created = await client.post("/v1/endpoints", json={"url": HOOK + "?token=hush"})
    assert created.status_code == 201, created.text
    hook = created.json()["id"]
    ok = [
        await client.patch(f"/v1/endpoints/{hook}", json={"description": "ledger sync"}),
        await client.post(f"/v1/endpoints/{hook}/rotate-secret", json={"grace_hours": 1}),
        await client.post(f"/v1/endpoints/{hook}/disable"),
        await client.post(f"/v1/endpoints/{hook}/disable"),  # already: nothing changes
        await client.post(f"/v1/endpoints/{hook}/enable"),
    ]
    assert [r.status_code for r in ok] == [200] * 5

    # two deposits over the level-0 limit are held; one approved, one rejected
    assert (await client.post("/v1/users", json={"external_id": "alice"})).status_code == 201
    held = []
    for n in range(2):
        seen = await client.post(
            "/v1/observations",
            json={"provider": "custody", "provider_deposit_id": f"d{n}", "user": "alice",
                  "asset": "USDT", "amount": "500", "status": "succeeded"},
        )  # fmt: skip
        assert seen.json()["deposit"]["status"] == "held", seen.text
        held.append(seen.json()["deposit"]["id"])
    assert (await client.post(f"/v1/deposits/{held[0]}/approve")).status_code == 200
    assert (await client.post(f"/v1/deposits/{held[1]}/reject")).status_code == 200
    refused = await client.post(f"/v1/deposits/{held[1]}/approve")  # decided: no record
    assert refused.status_code == 409

    deliveries = (await client.get("/v1/deliveries")).json()["data"]
    assert deliveries
    retried = await client.post(f"/v1/deliveries/{deliveries[0]['id']}/retry")
    assert retried.status_code == 202, retried.text
    replayed = await client.post(f"/v1/endpoints/{hook}/replay", json={"after_seq": 0})
    assert replayed.status_code == 202, replayed.text
    cli_retry = depositd("deliveries", "retry", str(deliveries[0]["id"]), cwd=tmp_path, env=env)
    assert cli_retry.returncode == 0, cli_retry.stderr

    # KYC: an end user submits twice; the operator rejects, then approves
    anon = httpx.AsyncClient(transport=client._transport, base_url=client.base_url)
    async with anon:
        session = await _signed_up(anon, merchant_id, tmp_path)
        fields = {
            "level": 1,
            "full_name": "Ivy Q",
            "date_of_birth": "1990-04-01",
            "country": "DE",
            "document_type": "passport",
            "document_number": "C01X",
        }
        first = await anon.post("/v1/me/kyc", json=fields, headers=session)
        reason = {"reason": "unreadable"}
        rejected = await client.post(
            f"/v1/kyc-submissions/{first.json()['id']}/reject", json=reason
        )
        assert rejected.status_code == 200
        second = await anon.post("/v1/me/kyc", json=fields, headers=session)
        approve = f"/v1/kyc-submissions/{second.json()['id']}/approve"
        assert (await client.post(approve, json={})).status_code == 200

    assert (await client.delete(f"/v1/endpoints/{hook}")).status_code == 204

    rows = await audit_rows(db)
    api = f"api_key:{key_id}"
    assert [(r.action, r.actor, r.subject) for r in rows] == [
        ("api_key.created", "cli", key_id),  # the fixture's key
        ("api_key.created", "cli", cli_key),
        ("api_key.revoked", "cli", cli_key),
        ("endpoint.created", api, hook),
        ("endpoint.updated", api, hook),
        ("endpoint.secret_rotated", api, hook),
        ("endpoint.disabled", api, hook),
        ("endpoint.enabled", api, hook),
        ("deposit.approved", api, held[0]),
        ("deposit.rejected", api, held[1]),
        ("delivery.retried", api, str(deliveries[0]["id"])),
        ("endpoint.replayed", api, hook),
        ("delivery.retried", "cli", str(deliveries[0]["id"])),
        ("kyc.rejected", api, first.json()["id"]),
        ("kyc.approved", api, second.json()["id"]),
        ("endpoint.deleted", api, hook),
    ]
    assert {r.merchant_id for r in rows} == {merchant_id}
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    # never a secret, and no query string (it may carry the receiver's token)
    stored = " ".join(str(r.details) for r in rows)
    assert "whsec_" not in stored
    assert "hush" not in stored
    assert cli_secret[10:] not in stored  # the key's shown prefix only
    assert rows[1].details == {"label": "", "prefix": cli_secret[:10]}
    assert rows[3].details["url"] == HOOK
    assert rows[4].details == {"description": "ledger sync"}
    approval = dict(rows[14].details)
    assert approval.pop("end_user_id")
    assert approval == {"asked_level": 1, "granted_level": 1}
    assert rows[13].details["reason"] == "unreadable"

    verified = depositd("audit", "verify", cwd=tmp_path, env=env)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout == f"audit log intact: {len(rows)} rows, head {rows[-1].hash[:16]}\n"
    listed = depositd("audit", "list", "--merchant", merchant_id, "--limit", "2",
                      cwd=tmp_path, env=env)  # fmt: skip
    assert [line.split("\t")[4] for line in listed.stdout.splitlines()] == [
        "endpoint.deleted",
        "kyc.approved",
    ]


async def _signed_up(client: httpx.AsyncClient, merchant_id: str, tmp_path: Path) -> dict[str, str]:
    address = "ivy@example.com"
    body = {"merchant": merchant_id, "email": address, "password": PASSWORD}
    assert (await client.post("/v1/auth/register", json=body)).status_code == 202
    (mail,) = (tmp_path / "outbox").glob("*.eml")
    text = email.message_from_bytes(mail.read_bytes()).get_payload(decode=True)
    assert isinstance(text, bytes)
    match = re.search(r"Your verification token is: (\S+)", text.decode())
    assert match
    await client.post("/v1/auth/verify-email", json={"token": match.group(1)})
    session = await client.post("/v1/auth/login", json=body)
    return {"Authorization": f"Bearer {session.json()['token']}"}


async def test_an_action_whose_record_cannot_be_appended_does_not_happen(
    db: Database, operator: tuple[httpx.AsyncClient, str, str]
) -> None:
    client, _, _ = operator
    async with db.writer.begin() as conn:
        await conn.execute(delete(audit_head))
    with pytest.raises(Exception, match="No row was found"):
        await client.post("/v1/endpoints", json={"url": HOOK})
    async with db.reader.connect() as conn:
        assert (await conn.execute(select(endpoints))).all() == []


async def test_verify_finds_edited_deleted_and_reordered_rows(db: Database, tmp_path: Path) -> None:
    await append(db, 5)
    assert (await verify_audit_log(db, batch=2)).intact
    rows = await audit_rows(db)

    async def tampered(problem: str, *changes: tuple[int, dict[str, Any]]) -> None:
        async with db.writer.begin() as conn:
            for seq, values in changes:
                await conn.execute(update(audit_log).where(audit_log.c.seq == seq).values(values))
        verdict = await verify_audit_log(db, batch=2)
        assert verdict.problem == problem
        async with db.writer.begin() as conn:  # put it back
            for seq, _ in changes:
                original = rows[seq - 1]._asdict()
                await conn.execute(update(audit_log).where(audit_log.c.seq == seq).values(original))
        assert (await verify_audit_log(db)).intact

    await tampered(
        "row seq 3: hash does not match its contents (edited)", (3, {"subject": "key_forged"})
    )
    # two rows' contents swapped, seqs kept
    contents = [{k: v for k, v in r._asdict().items() if k != "seq"} for r in rows]
    await tampered(
        "row seq 2: hash does not match its contents (edited)", (2, contents[2]), (3, contents[1])
    )

    async with db.writer.begin() as conn:
        await conn.execute(delete(audit_log).where(audit_log.c.seq == 3))
    env = environment(db)
    broken = depositd("audit", "verify", cwd=tmp_path, env=env)
    assert broken.returncode == 1
    assert broken.stdout == "audit log BROKEN after 2 good rows: seq 3 missing (deleted)\n"
    async with db.writer.begin() as conn:
        await conn.execute(delete(audit_log).where(audit_log.c.seq >= 4))
    verdict = await verify_audit_log(db)
    assert verdict.problem == "seq 3-5 missing (deleted)"


async def test_concurrent_appends_make_one_unbroken_chain(db: Database) -> None:
    await asyncio.gather(*(append(db, 5) for _ in range(8)))
    rows = await audit_rows(db)
    assert [r.seq for r in rows] == list(range(1, 41))
    verdict = await verify_audit_log(db)
    assert (verdict.problem, verdict.rows) == (None, 40)
