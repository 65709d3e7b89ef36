"""The JSON-RPC client against a real anvil node."""

from __future__ import annotations

import asyncio

import pytest

from depositd.chain.rpc import EvmRpc, RpcCallFailed, RpcUnavailable


async def test_reads_the_chain_and_follows_new_blocks(anvil_url: str) -> None:
    async with EvmRpc(anvil_url) as rpc:
        assert await rpc.chain_id() == 31337
        start = await rpc.block_number()
        await rpc.call("anvil_mine", hex(5))
        assert await rpc.block_number() == start + 5


async def test_a_batch_answers_in_the_order_asked(anvil_url: str) -> None:
    async with EvmRpc(anvil_url) as rpc:
        await rpc.call("anvil_mine", hex(3))
        numbers = [1, 3, 2]
        blocks = await rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        assert [int(block["number"], 16) for block in blocks] == numbers
        assert len({block["hash"] for block in blocks}) == 3


async def test_a_refused_call_keeps_the_nodes_code(anvil_url: str) -> None:
    async with EvmRpc(anvil_url) as rpc:
        with pytest.raises(RpcCallFailed) as refused:
            await rpc.batch([("eth_chainId", []), ("eth_noSuchMethod", [])])
    assert refused.value.method == "eth_noSuchMethod"
    assert refused.value.code == -32601


async def test_an_unreachable_node_is_unavailable() -> None:
    async with EvmRpc("http://127.0.0.1:1", timeout_seconds=2) as rpc:
        with pytest.raises(RpcUnavailable, match=r"127\.0\.0\.1:1"):
            await rpc.block_number()


async def test_a_silent_node_times_out() -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, EvmRpc(f"http://127.0.0.1:{port}", timeout_seconds=0.3) as rpc:
        with pytest.raises(RpcUnavailable, match=r"no answer within 0\.3 s"):
            await rpc.block_number()
