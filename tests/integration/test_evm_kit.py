"""The test chain kit itself: a Vyper token compiled offline, deployed and used on anvil."""

from __future__ import annotations

from depositd.chain.rpc import EvmRpc

from .evm import TRANSFER_TOPIC, deploy_token

ALICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


async def test_a_token_transfer_shows_as_a_log_of_the_token(anvil_url: str) -> None:
    async with EvmRpc(anvil_url) as rpc:
        token = await deploy_token(rpc)
        assert await token.read("decimals()", [], [], ["uint8"]) == (6,)
        receipt = await token.transact(
            "transfer(address,uint256)", ["address", "uint256"], [ALICE, 25_500_000]
        )
        assert receipt["status"] == "0x1"
        assert await token.read("balanceOf(address)", ["address"], [ALICE], ["uint256"]) == (
            25_500_000,
        )
        block = receipt["blockNumber"]
        logs = await rpc.call(
            "eth_getLogs",
            {"fromBlock": block, "toBlock": block, "topics": [TRANSFER_TOPIC]},
        )
    assert len(logs) == 1
    assert logs[0]["address"] == token.address.lower()
    assert int(logs[0]["topics"][2], 16) == int(ALICE, 16)
    assert int(logs[0]["data"], 16) == 25_500_000
