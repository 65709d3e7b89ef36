"""The local chain of ``depositd dev``: anvil from ./node_modules, a demo token, demo deposits.

Everything here is for trying depositd out on one machine; none of it runs in production.
anvil's default accounts are funded and unlocked, so demo transactions need no keys.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from eth_abi.abi import encode

from depositd.chain.rpc import EvmRpc, RpcError
from depositd.config import ChainConfig
from depositd.db.engine import Database
from depositd.db.repositories import DepositFilter
from depositd.domain.assets import Asset, AssetBook
from depositd.domain.deposits import DepositState, DepositStatus
from depositd.domain.money import format_amount, parse_amount
from depositd.errors import DepositdError
from depositd.services import addresses, merchants, queries, users

#: anvil's first default account: deploys the demo token and holds its supply
DEPLOYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
#: anvil's last default account: pays the demo ETH deposits
PAYER = "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"
#: xpub at m/44'/60'/1'/0 of anvil's default mnemonic ("test test ... junk"), the demo
#: merchant's: its addresses are not among anvil's funded accounts, so a deposit shows up as
#: the only money there. Never use it for real money.
DEMO_XPUB = (
    "xpub6EFHUEbYV13535ChA9yg5xZTWowwFCmFoWnhLbwkd91xHoirGu89GTZwBSUBnBpFeY5EV2cgof8yuyDnkeGALc"
    "D8DgGYJSiQfkxKpunWTX1"
)
DEMO_MERCHANT = "demo"


def _anvil_binary() -> Path:
    here = Path.cwd() / "node_modules" / ".bin" / "anvil"
    checkout = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "anvil"
    for candidate in (here, checkout):
        if candidate.exists():
            return candidate
    found = shutil.which("anvil")
    if found is None:
        raise DepositdError("anvil is not installed: run 'make install' (npm ci) first")
    return Path(found)


async def _answers(url: str) -> bool:
    try:
        async with EvmRpc(url, timeout_seconds=1) as rpc:
            await rpc.chain_id()
    except RpcError:
        return False
    return True


def _spawn_anvil(chain: ChainConfig, port: int, state: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own dev dependency, fixed arguments
        [
            str(_anvil_binary()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--chain-id",
            str(chain.chain_id),
            "--block-time",
            str(max(1, round(chain.block_time_seconds))),
            "--state",
            str(state),
            "--state-interval",
            "5",
            # historical states stay in memory: on disk they pile up in ~/.foundry over a long
            # session (and are left behind if anvil is killed)
            "--max-persisted-states",
            "0",
            "--silent",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def start_anvil(chain: ChainConfig, state: Path) -> subprocess.Popen[bytes] | None:
    """Start anvil for ``chain`` unless its node already answers; None if it did.

    Its chain is kept in ``state`` (written every few seconds and on exit), so the dev
    database and the dev chain stay in step across restarts.
    """
    assert chain.rpc_url is not None
    if await _answers(chain.rpc_url):
        return None
    where = urlsplit(chain.rpc_url)
    if where.hostname not in ("127.0.0.1", "localhost"):
        raise DepositdError(f"the dev chain at {chain.rpc_url} does not answer")
    state.parent.mkdir(parents=True, exist_ok=True)
    node = _spawn_anvil(chain, where.port or 8545, state)
    deadline = time.monotonic() + 20
    while not await _answers(chain.rpc_url):
        if node.poll() is not None or time.monotonic() > deadline:
            node.kill()
            raise DepositdError(f"anvil did not start on {chain.rpc_url}")
        await asyncio.sleep(0.1)
    return node


async def ensure_demo_token(rpc: EvmRpc, token: Asset) -> bool:
    """Deploy the demo ERC-20 at the asset's configured address; False if it is there."""
    assert token.contract is not None
    if await rpc.call("eth_getCode", token.contract, "latest") not in ("0x", "0x0", None):
        return False
    if int(await rpc.call("eth_getTransactionCount", DEPLOYER, "latest"), 16) != 0:
        raise DepositdError(
            f"{token.code} is configured at {token.contract}, the first contract of {DEPLOYER},"
            " but that account has sent transactions already: remove var/ to start a fresh chain"
        )
    try:
        import vyper  # a dev dependency: only `depositd dev` compiles contracts
    except ImportError as exc:
        raise DepositdError("the demo token needs the dev tools: run 'make install'") from exc
    code = resources.files("depositd").joinpath("contracts/token.vy").read_text()
    bytecode = vyper.compile_code(code, output_formats=["bytecode"])["bytecode"]
    supply = 10**9 * 10**token.decimals
    args = encode(
        ["string", "string", "uint8", "uint256"],
        [f"Demo {token.symbol}", token.symbol, token.decimals, supply],
    )
    tx_hash = await rpc.call(
        "eth_sendTransaction", {"from": DEPLOYER, "data": bytecode + args.hex()}
    )
    receipt = await _mined(rpc, tx_hash)
    if receipt.get("contractAddress", "").lower() != token.contract:
        raise DepositdError(f"the demo token landed at {receipt.get('contractAddress')}")
    return True


async def _mined(rpc: EvmRpc, tx_hash: str, within_seconds: float = 30) -> dict[str, str]:
    deadline = time.monotonic() + within_seconds
    while time.monotonic() < deadline:
        receipt: dict[str, str] | None = await rpc.call("eth_getTransactionReceipt", tx_hash)
        if receipt is not None:
            return receipt
        await asyncio.sleep(0.2)
    raise DepositdError(f"transaction {tx_hash} was not mined within {within_seconds:.0f} s")


async def demo_merchant(db: Database) -> str:
    """The demo merchant's id (made on first use), deriving addresses from ``DEMO_XPUB``."""
    existing = [m for m in await merchants.list_merchants(db) if m.name == DEMO_MERCHANT]
    merchant = existing[0] if existing else await merchants.create_merchant(db, DEMO_MERCHANT)
    await addresses.set_xpub(db, merchant.id, DEMO_XPUB)
    return merchant.id


@dataclass(frozen=True)
class DemoDeposit:
    asset: Asset
    amount: int
    tx_hash: str


async def simulate(
    db: Database,
    assets: AssetBook,
    chain_name: str,
    chain: ChainConfig,
    user: str,
    amounts: dict[str, str],
    *,
    say: Callable[[str], None] = print,
    timeout_seconds: float = 120,
) -> list[DepositState]:
    """Send a demo deposit of each asset to ``user``'s address and follow them to the end.

    The running ``depositd dev`` watches the chain and credits them; this only sends and
    reports what it sees in the database, until every deposit is settled.
    """
    assert chain.rpc_url is not None
    merchant_id = await demo_merchant(db)
    await users.ensure_user(db, merchant_id, user)
    address = await addresses.deposit_address(db, {chain_name}, merchant_id, user, chain_name)
    say(f"user {user!r} deposit address on {chain_name}: {address.address}")
    sent: list[DemoDeposit] = []
    async with EvmRpc(chain.rpc_url) as rpc:
        for code, text in amounts.items():
            asset = assets[code]
            amount = parse_amount(text, asset.decimals)
            sent.append(DemoDeposit(asset, amount, await pay(rpc, asset, address.address, amount)))
            say(f"sent {text} {asset.symbol}: tx {sent[-1].tx_hash}")
    return await _follow(db, merchant_id, sent, say, timeout_seconds)


async def pay(rpc: EvmRpc, asset: Asset, to: str, amount: int) -> str:
    """Send ``amount`` of ``asset`` to ``to`` from a funded dev account; the transaction hash
    (sent, not yet mined)."""
    if asset.contract is None:
        tx = {"from": PAYER, "to": to, "value": hex(amount)}
    else:
        data = "0xa9059cbb" + encode(["address", "uint256"], [to, amount]).hex()
        tx = {"from": DEPLOYER, "to": asset.contract, "data": data}
    tx_hash: str = await rpc.call("eth_sendTransaction", tx)
    return tx_hash


async def _follow(
    db: Database,
    merchant_id: str,
    sent: list[DemoDeposit],
    say: Callable[[str], None],
    timeout_seconds: float,
) -> list[DepositState]:
    settled = {DepositStatus.CREDITED, DepositStatus.REJECTED, DepositStatus.FAILED}
    wanted = {d.tx_hash.lower(): d for d in sent}
    shown: dict[str, tuple[DepositStatus, int]] = {}
    deadline = time.monotonic() + timeout_seconds
    while True:
        page = await queries.list_deposits(db, DepositFilter(merchant_id=merchant_id), None, 100)
        mine = {
            d.tx_hash.lower(): d for d in page.items if d.tx_hash and d.tx_hash.lower() in wanted
        }
        for tx, deposit in sorted(mine.items()):
            seen = (deposit.status, deposit.confirmations)
            if shown.get(tx) != seen:
                shown[tx] = seen
                demo = wanted[tx]
                amount = format_amount(deposit.amount, demo.asset.decimals)
                say(
                    f"  {Decimal(amount):>12} {demo.asset.symbol:<5} {deposit.status.value:<10}"
                    f" {deposit.confirmations}/{deposit.required_confirmations} confirmations"
                    f"  {deposit.reason.render('en')}"
                )
        if len(mine) == len(wanted) and all(d.status in settled for d in mine.values()):
            return list(mine.values())
        if time.monotonic() > deadline:
            raise DepositdError(
                f"not settled within {timeout_seconds:.0f} s: is 'depositd dev' running"
                " (it watches the chain)?"
            )
        await asyncio.sleep(0.5)
