"""EVM JSON-RPC over HTTP: single calls and batches, with timeouts.

Errors are translated at this edge, the cause kept::

    RpcError                 anything that went wrong talking to the node
    ├── RpcUnavailable       unreachable, timed out, or a non-JSON / HTTP error answer: retry later
    └── RpcCallFailed        the node answered with a JSON-RPC error object: retrying won't help

Answers are decoded with msgspec. A caller that names the type of its results gets them
decoded straight into that type, fields it does not declare skipped unread: a batch of 50
blocks' receipts (1.4 MB) decodes in 1.5 ms that way, in 12 ms with orjson into dicts.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar

import aiohttp
import msgspec

from depositd.errors import DepositdError
from depositd.jsontext import dump_json_bytes

_JSON = {"Content-Type": "application/json"}


class RpcError(DepositdError):
    """Talking to the node failed."""


class RpcUnavailable(RpcError):
    """The node could not be reached or did not answer in time; the call may be retried."""


class RpcCallFailed(RpcError):
    """The node refused the call: a JSON-RPC error object with its code and message."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"{method}: {message} (code {code})")
        self.method, self.code, self.message = method, code, message


T = TypeVar("T")


class _Error(msgspec.Struct):
    code: int = 0
    message: str = ""


class _Answer(msgspec.Struct, Generic[T]):
    id: int | str | None = None
    result: T | None = None
    error: _Error | None = None


@functools.cache
def _decoder(result: Any) -> msgspec.json.Decoder[Any]:
    # one answer, or a list of them (a batch)
    return msgspec.json.Decoder(list[_Answer[result]] | _Answer[result])


class EvmRpc:
    """A JSON-RPC client for one node URL, reusing its connections."""

    def __init__(self, url: str, *, timeout_seconds: float = 10.0) -> None:
        self.url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)

    async def __aenter__(self) -> EvmRpc:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, method: str, *params: Any) -> Any:
        """One call; its ``result``."""
        (result,) = await self.batch([(method, params)])
        return result

    async def batch(
        self, calls: Sequence[tuple[str, Sequence[Any]]], result: Any = Any
    ) -> list[Any]:
        """Several calls in one HTTP request; results in the order of ``calls``, each
        decoded as ``result`` (a type msgspec decodes; plain JSON values by default).

        Raises ``RpcCallFailed`` for the first call the node refused.
        """
        if not calls:
            return []
        requests = [
            {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
            for method, params in calls
        ]
        body = await self._post(requests if len(requests) > 1 else requests[0])
        try:
            answers = _decoder(result).decode(body)
        except msgspec.DecodeError as exc:
            raise RpcUnavailable(
                f"{self.url}: the answer is not a JSON-RPC response: {exc}"
            ) from exc
        if isinstance(answers, _Answer):
            answers = [answers]
        by_id = {answer.id: answer for answer in answers}
        results = []
        for request in requests:
            answer = by_id.get(request["id"])
            if answer is None:
                raise RpcUnavailable(f"{request['method']}: no answer in the batch")
            if answer.error is not None:
                error = answer.error
                raise RpcCallFailed(str(request["method"]), error.code, error.message)
            results.append(answer.result)
        return results

    async def chain_id(self) -> int:
        return int(await self.call("eth_chainId"), 16)

    async def block_number(self) -> int:
        return int(await self.call("eth_blockNumber"), 16)

    async def _post(self, payload: Any) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            # orjson: the standard library's encoder took ~8% of the reading's Python (py-spy)
            async with self._session.post(
                self.url, data=dump_json_bytes(payload), headers=_JSON
            ) as response:
                if response.status >= 400:
                    text = (await response.text())[:200]
                    raise RpcUnavailable(f"{self.url}: HTTP {response.status} {text}")
                return await response.read()
        except TimeoutError as exc:
            raise RpcUnavailable(f"{self.url}: no answer within {self._timeout.total} s") from exc
        except aiohttp.ClientError as exc:
            raise RpcUnavailable(f"{self.url}: {exc}") from exc
