"""The depositd command as an operator uses it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from depositd.cli import DEV_XPUB
from depositd.db.engine import Database
from depositd.db.tables import audit_log


def depositd(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DEPOSITD_")}
    environ.update(env or {})
    return subprocess.run(  # noqa: S603 - our own command with fixed arguments
        [sys.executable, "-m", "depositd.cli", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_admin_verbs(db: Database, tmp_path: Path) -> None:
    env = {"DEPOSITD_DATABASE__URL": db.url.render_as_string(hide_password=False)}
    migrated = depositd("migrate", cwd=tmp_path, env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert "schema is current" in migrated.stdout

    created = depositd("merchants", "create", "Acme Games", cwd=tmp_path, env=env)
    assert created.returncode == 0, created.stderr
    merchant_id = created.stdout.strip()
    assert merchant_id.startswith("mer_")
    listed = depositd("merchants", "list", cwd=tmp_path, env=env)
    assert f"{merchant_id}\tAcme Games" in listed.stdout

    issued = depositd("api-keys", "create", "--merchant", merchant_id, cwd=tmp_path, env=env)
    assert issued.returncode == 0, issued.stderr
    lines = dict(line.split(": ", 1) for line in issued.stdout.splitlines() if ": " in line)
    key_id, secret = lines["id"].strip(), lines["key"].strip()
    assert secret.startswith("dpk_")
    assert secret not in issued.stderr  # never logged

    revoked = depositd("api-keys", "revoke", key_id, cwd=tmp_path, env=env)
    assert revoked.returncode == 0, revoked.stderr
    again = depositd("api-keys", "revoke", key_id, cwd=tmp_path, env=env)
    assert again.returncode == 1
    assert again.stderr.strip() == f"depositd: no active API key {key_id}"

    unknown = depositd("api-keys", "create", "--merchant", "mer_nope", cwd=tmp_path, env=env)
    assert (unknown.returncode, unknown.stderr.strip()) == (1, "depositd: no merchant mer_nope")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEPOSITD_SERVER__PORT": "seventy"}, "depositd: config error: server.port: "),
        ({"DEPOSITD_DATABASE__URL": "mysql://x/y"}, "depositd: config error: database.url: "),
        ({"DEPOSITD_SERVER__COLOUR": "red"}, "depositd: config error: server.colour: "),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(
    env: dict[str, str], message: str, tmp_path: Path
) -> None:
    result = depositd("migrate", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1


def test_password_in_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "depositd.toml"
    config.write_text('[database]\nurl = "postgresql://depositd:hunter2@db/depositd"\n')
    result = depositd("--config", str(config), "migrate", cwd=tmp_path)
    assert result.returncode == 2
    assert "hunter2" not in result.stderr
    assert "database.url: a password does not belong in the config file" in result.stderr


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    result = depositd("serve", cwd=tmp_path)
    assert result.returncode == 1
    assert "run 'depositd migrate'" in result.stderr


def test_an_unreachable_database_is_one_line_without_the_password(tmp_path: Path) -> None:
    env = {"DEPOSITD_DATABASE__URL": "postgresql://depositd:hunter2@127.0.0.1:1/depositd"}
    result = depositd("migrate", cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("depositd: database postgresql://depositd:***@127.0.0.1:1/")
    assert result.stderr.count("\n") == 1
    assert "hunter2" not in result.stderr


def test_set_xpub_refuses_a_private_key(db: Database, tmp_path: Path) -> None:
    env = {"DEPOSITD_DATABASE__URL": db.url.render_as_string(hide_password=False)}
    created = depositd("merchants", "create", "Acme", cwd=tmp_path, env=env)
    merchant_id = created.stdout.strip()
    # anvil's well-known test key (m/44'/60'/0'/0 of "test test ... junk"): public knowledge
    xprv = (
        "xprv9zz7v8QuW9DB5aPK3A4sGm1Nd3gNbg3NznE3Gu3TUPDFCEvZwALBrjY5d5h8eyKywqqFkKXDaxAKsmL4q"
        "VMzN3wBGaC2h3WoJT74EVuGwZi"
    )
    refused = depositd("merchants", "set-xpub", merchant_id, xprv, cwd=tmp_path, env=env)
    assert refused.returncode == 1
    assert refused.stderr.startswith("depositd: that is an extended private key")
    good = depositd("merchants", "set-xpub", merchant_id, DEV_XPUB, cwd=tmp_path, env=env)
    assert (good.returncode, good.stdout.strip()) == (0, f"xpub set for {merchant_id}")


async def test_operators_add_reads_the_password_from_stdin(db: Database, tmp_path: Path) -> None:
    from depositd.services import merchants, operators

    env = {"DEPOSITD_DATABASE__URL": db.url.render_as_string(hide_password=False)}
    merchant = await merchants.create_merchant(db, "acme")

    def add(email: str, password: str) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("DEPOSITD_")}
        return subprocess.run(  # noqa: S603 - our own command with fixed arguments
            [sys.executable, "-m", "depositd.cli", "operators", "add",
             "--merchant", merchant.id, "--email", email],
            cwd=tmp_path, env={**environ, **env}, input=password + "\n",
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    added = add("Ops@Acme.example", "a long operator passphrase")
    assert added.returncode == 0, added.stderr
    assert "ops@acme.example" in added.stdout
    assert "passphrase" not in added.stdout + added.stderr
    session = await operators.login(db, "ops@acme.example", "a long operator passphrase")
    assert session.operator.merchant_id == merchant.id

    taken = add("ops@acme.example", "another long passphrase")
    assert (taken.returncode, taken.stderr.strip()) == (
        1,
        "depositd: ops@acme.example is already an operator",
    )
    weak = add("new@acme.example", "short")
    assert weak.returncode == 1
    assert "at least 10 characters" in weak.stderr
    # a new operator is a security action: audited, with who did it and never the password
    async with db.reader.connect() as conn:
        rows = (await conn.execute(select(audit_log).order_by(audit_log.c.seq))).all()
    assert [(r.actor, r.action, r.subject, r.details) for r in rows] == [
        ("cli", "operator.created", session.operator.id, {"email": "ops@acme.example"})
    ]
