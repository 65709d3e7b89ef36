"""`depositd dev` as `make dev` runs it: a real server process on a real port."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ..conftest import free_port


def test_dev_prints_a_working_key_and_serves(tmp_path: Path) -> None:
    port, chain_port = free_port(), free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DEPOSITD_")}
    # its own dev chain: a developer's `make dev` may be using the default port
    environ["DEPOSITD_CHAINS__ANVIL__RPC_URL"] = f"http://127.0.0.1:{chain_port}"
    environ["DEPOSITD_CHAINS__ANVIL__WS_URL"] = f"ws://127.0.0.1:{chain_port}"
    with subprocess.Popen(  # noqa: S603 - our own command
        [sys.executable, "-m", "depositd.cli", "dev", "--port", str(port)],
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            key = _use_as_printed(server, port, tmp_path / "var" / "outbox")
            simulated = subprocess.run(
                [sys.executable, "-m", "depositd.cli", "dev", "simulate", "--user", "bob"],
                cwd=tmp_path,
                env=environ,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            server.terminate()
            _, stderr = server.communicate(timeout=15)
    assert simulated.returncode == 0, simulated.stdout + simulated.stderr
    lines = simulated.stdout.splitlines()
    for symbol in ("ETH", "USDT"):
        # pending and confirming show too unless the machine is slow enough to skip a block
        seen = [line.split()[2] for line in lines if line.split()[1:2] == [symbol]]
        assert seen[-1] == "credited", simulated.stdout
    assert lines[-1] == "2 of 2 deposits credited"
    assert (tmp_path / "var" / "depositd.db").exists()
    assert (tmp_path / "var" / "anvil-chain.json").exists()  # the dev chain outlives a restart
    assert (tmp_path / "var" / "kyc.key").stat().st_mode & 0o777 == 0o600
    assert not _listening(chain_port), "the dev chain was left running"
    assert "Application startup complete" in stderr
    assert key not in stderr  # the key is shown to the operator, never logged


def _listening(port: int) -> bool:
    for _ in range(50):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                pass
        except OSError:
            return False
        time.sleep(0.1)
    return True


def _use_as_printed(server: subprocess.Popen[str], port: int, outbox: Path) -> str:
    """Follow the printed examples against the running server; returns the printed key."""
    assert server.stdout is not None
    printed = ""
    deadline = time.monotonic() + 30
    while "API reference" not in printed and time.monotonic() < deadline:
        printed += server.stdout.readline()
    match = re.search(r"dpk_[A-Za-z0-9_-]+", printed)
    assert match, printed
    headers = {"Authorization": f"Bearer {match.group(0)}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=5) as client:
        for _ in range(100):
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert client.post("/v1/users", json={"external_id": "alice"}).status_code == 201
        deposit = {
            "provider": "demo",
            "provider_deposit_id": "dep-1",
            "user": "alice",
            "asset": "USDT",
            "amount": "25.5",
            "status": "succeeded",
        }
        credited = client.post("/v1/observations", json=deposit)
        assert credited.json()["deposit"]["status"] == "credited"
        balances = client.get("/v1/users/alice/balances").json()["balances"]
        assert balances[0]["available"] == "25.5"
    _sign_up_as_printed(printed, port, outbox)
    return match.group(0)


def _sign_up_as_printed(printed: str, port: int, outbox: Path) -> None:
    """The printed end-user sign-up works, its email lands in the outbox, KYC is set up."""
    command = re.search(r"(\{\"merchant\": .*\})'", printed)
    assert command, printed
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        body = json.loads(command.group(1))
        assert client.post("/v1/auth/register", json=body).status_code == 202
        [mail] = list(outbox.glob("*.eml"))
        token = re.search(r"token is: (\S+)", mail.read_text())
        assert token, mail.read_text()
        assert client.post("/v1/auth/verify-email", json={"token": token[1]}).status_code == 200
        session = client.post("/v1/auth/login", json=body).json()
        client.headers["Authorization"] = f"Bearer {session['token']}"
        kyc = {
            "level": 1,
            "full_name": "Mei Lin",
            "date_of_birth": "1992-08-15",
            "country": "SG",
            "document_type": "passport",
            "document_number": "K1",
        }
        assert client.post("/v1/me/kyc", json=kyc).status_code == 201
