"""A tiny FastAPI app that bench/asgi_servers.py serves under each ASGI server."""

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


class DepositEvent(BaseModel):
    """Shaped like a deposit notification so that /echo parses a realistic ~300-byte body."""

    event_id: str
    deposit_id: str
    chain: str
    tx_hash: str
    address: str
    amount: str
    confirmations: int
    status: str
    occurred_at: str


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/echo")
async def echo(event: DepositEvent) -> DepositEvent:
    return event
