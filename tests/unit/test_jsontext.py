import json
from types import MappingProxyType

import pytest

from depositd.jsontext import dump_json, dump_json_bytes


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [None, "x", 1.5, True], "c": {"d": "é"}},
        {"amount": 2**200},  # beyond orjson's 64 bits
        {"n": -(2**63)},
        [],
        "text",
    ],
)
def test_round_trips_through_the_standard_library(value: object) -> None:
    assert json.loads(dump_json(value)) == value
    assert json.loads(dump_json_bytes(value)) == value  # a request body: UTF-8 bytes


def test_mappings_that_are_not_dicts() -> None:
    assert json.loads(dump_json({"p": MappingProxyType({"x": 1})})) == {"p": {"x": 1}}
    assert json.loads(dump_json({"p": MappingProxyType({"big": 2**70})})) == {"p": {"big": 2**70}}


def test_refuses_what_json_cannot_say() -> None:
    with pytest.raises(TypeError):
        dump_json({"x": object()})
