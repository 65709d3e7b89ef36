"""Test helpers for a real anvil chain: compile Vyper contracts offline, deploy, transact.

anvil's default accounts are unlocked, so transactions are sent with ``eth_sendTransaction``
and mined at once (automine); no keys are handled here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import vyper
from eth_abi import decode, encode
from eth_utils.crypto import keccak

from depositd.chain.rpc import EvmRpc

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts"
#: anvil's first funded, unlocked account
DEPLOYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()


@cache
def compiled(name: str) -> tuple[str, tuple[dict[str, Any], ...]]:
    """(bytecode, ABI) of ``tests/contracts/<name>.vy``, compiled offline by vyper."""
    out = vyper.compile_code(
        (CONTRACTS / f"{name}.vy").read_text(), output_formats=["bytecode", "abi"]
    )
    return out["bytecode"], tuple(out["abi"])


def selector(signature: str) -> str:
    return keccak(text=signature)[:4].hex()


async def send(rpc: EvmRpc, tx: dict[str, Any]) -> dict[str, Any]:
    """Send from an unlocked account and return the mined receipt."""
    tx_hash = await rpc.call("eth_sendTransaction", {"from": DEPLOYER, **tx})
    receipt: dict[str, Any] = await rpc.call("eth_getTransactionReceipt", tx_hash)
    return receipt


@dataclass(frozen=True)
class Contract:
    rpc: EvmRpc
    address: str

    async def transact(
        self, signature: str, types: list[str], args: list[Any], sender: str = DEPLOYER
    ) -> dict[str, Any]:
        data = "0x" + selector(signature) + encode(types, args).hex()
        tx_hash = await self.rpc.call(
            "eth_sendTransaction", {"from": sender, "to": self.address, "data": data}
        )
        receipt: dict[str, Any] = await self.rpc.call("eth_getTransactionReceipt", tx_hash)
        return receipt

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
