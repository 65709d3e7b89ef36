"""``depositd serve --processes N``: several processes on one socket (PostgreSQL), all gone
after SIGTERM; refused on SQLite."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx

from depositd.db.engine import Database
from depositd.services import merchants, users

from ..conftest import free_port
from .test_callbacks import Setup, payload, signed
from .test_callbacks_crash import config_file, start_server, wait_until_serving


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


async def test_several_processes_serve_one_port_and_stop_together(
    db: Database, tmp_path: Path
) -> None:
    merchant = await merchants.create_merchant(db, "acme")
    await users.ensure_user(db, merchant.id, "alice")
    path = config_file(tmp_path, merchant.id)
    port = free_port()
    log = tmp_path / "server.log"
    server = start_server(db, path, port, log, DEPOSITD_SERVER__PROCESSES="3")
    if db.is_sqlite:
        assert server.wait(timeout=30) == 2
        assert "more than one process needs PostgreSQL" in log.read_text()
        return
    try:
        await wait_until_serving(port, server)
        serving = children_of(server.pid)
        assert len(serving) == 2, log.read_text()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            bodies = [payload(f"evt-{n}", id=f"dep-{n}") for n in range(30)]
            answers = await asyncio.gather(
                *(
                    client.post("/v1/callbacks/custody", content=b, headers=signed(b))
                    for b in bodies
                )
            )
        assert [a.status_code for a in answers] == [200] * 30
        setup = Setup(db, merchant.id, httpx.AsyncClient())
        await setup.settled()
        assert len(await setup.deposits()) == 30
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in serving):
        assert time.monotonic() < deadline, "a serving process outlived the server"
        await asyncio.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
