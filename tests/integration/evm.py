"""Test helpers for a real anvil chain: compile Vyper contracts offline, deploy, transact.

anvil's default accounts are unlocked, so transactions are sent with ``eth_sendTransaction``
and mined at once (automine); no keys are handled here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import vyper
from eth_abi import decode, encode
from eth_utils.crypto import keccak

import depositd
from depositd.chain.rpc import EvmRpc

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts"
SHIPPED = Path(depositd.__file__).parent / "contracts"
#: anvil's first funded, unlocked account
DEPLOYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()


def source(name: str) -> str:
    """A test contract (``tests/contracts``), or one depositd ships (the demo token)."""
    for folder in (CONTRACTS, SHIPPED):
        if (folder / f"{name}.vy").exists():
            return (folder / f"{name}.vy").read_text()
    raise FileNotFoundError(f"no contract {name}.vy")


@cache
def compiled(name: str) -> tuple[str, tuple[dict[str, Any], ...]]:
    """(bytecode, ABI) of contract ``name``, compiled offline by vyper."""
    out = vyper.compile_code(source(name), output_formats=["bytecode", "abi"])
    return out["bytecode"], tuple(out["abi"])


@cache
def runtime_code(name: str) -> str:
    """Deployed bytecode of contract ``name``, to install with ``anvil_setCode``."""
    code: str = vyper.compile_code(source(name), output_formats=["bytecode_runtime"])[
        "bytecode_runtime"
    ]
    return code


def selector(signature: str) -> str:
    return keccak(text=signature)[:4].hex()


async def mined(rpc: EvmRpc, tx_hash: str) -> dict[str, Any]:
    """The receipt of ``tx_hash`` once mined (anvil answers the send before it mines)."""
    for _ in range(200):
        receipt: dict[str, Any] | None = await rpc.call("eth_getTransactionReceipt", tx_hash)
        if receipt is not None:
            return receipt
        await asyncio.sleep(0.01)
    raise AssertionError(f"{tx_hash} was not mined")


async def send(rpc: EvmRpc, tx: dict[str, Any]) -> dict[str, Any]:
    """Send from an unlocked account and return the mined receipt."""
    return await mined(rpc, await rpc.call("eth_sendTransaction", {"from": DEPLOYER, **tx}))


async def send_eth(
    rpc: EvmRpc, to: str, value: int, *, sender: str = DEPLOYER, gas: int | None = None
) -> dict[str, Any]:
    """Send native coin; with ``gas`` set the node mines it even if it is going to fail."""
    tx: dict[str, Any] = {"from": sender, "to": to, "value": hex(value)}
    if gas is not None:
        tx["gas"] = hex(gas)
    return await mined(rpc, await rpc.call("eth_sendTransaction", tx))


@dataclass(frozen=True)
class Contract:
    rpc: EvmRpc
    address: str

    async def transact(
        self, signature: str, types: list[str], args: list[Any], sender: str = DEPLOYER
    ) -> dict[str, Any]:
        return await mined(self.rpc, await self.transact_later(signature, types, args, sender))

    async def transact_later(
        self, signature: str, types: list[str], args: list[Any], sender: str = DEPLOYER
    ) -> str:
        """Send without waiting to be mined (for manual mining); the transaction hash."""
        data = "0x" + selector(signature) + encode(types, args).hex()
        tx_hash: str = await self.rpc.call(
            "eth_sendTransaction", {"from": sender, "to": self.address, "data": data}
        )
        return tx_hash

    async def read(
        self, signature: str, types: list[str], args: list[Any], returns: list[str]
    ) -> tuple[Any, ...]:
        data = "0x" + selector(signature) + encode(types, args).hex()
        answer = await self.rpc.call("eth_call", {"to": self.address, "data": data}, "latest")
        return tuple(decode(returns, bytes.fromhex(answer[2:])))


async def deploy(rpc: EvmRpc, name: str, types: list[str], args: list[Any]) -> Contract:
    bytecode, _abi = compiled(name)
    receipt = await send(rpc, {"data": bytecode + encode(types, args).hex()})
    assert receipt["status"] == "0x1", receipt
    return Contract(rpc, receipt["contractAddress"])


async def deploy_token(
    rpc: EvmRpc,
    name: str = "Tether USD",
    symbol: str = "USDT",
    decimals: int = 6,
    supply: int = 10**15,
) -> Contract:
    return await deploy(
        rpc, "token", ["string", "string", "uint8", "uint256"], [name, symbol, decimals, supply]
    )
