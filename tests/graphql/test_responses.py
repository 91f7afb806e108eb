"""How GraphQL responses are encoded: orjson, with `json.dumps` where orjson refuses."""

from __future__ import annotations

import json
import math

from app.graphql.responses import encode_json


def test_a_response_is_compact_json_with_its_keys_in_order() -> None:
    data = {"data": {"z": 1, "a": [True, None, 1.5], "m": {"b": "x", "a": "y"}}}
    encoded = encode_json(data)
    assert encoded == json.dumps(data, separators=(",", ":")).encode()
    assert list(json.loads(encoded)["data"]) == ["z", "a", "m"]


def test_text_beyond_ascii_is_sent_as_utf8_and_parses_to_the_same_text() -> None:
    data = {"data": {"name": "René's 机器人 🤖", "quote": 'a "b"\n\\c\u2028'}}
    encoded = encode_json(data)
    assert "René's 机器人 🤖".encode() in encoded
    assert json.loads(encoded) == json.loads(json.dumps(data)) == data


def test_what_orjson_refuses_is_written_as_before() -> None:
    for data in (
        {"errors": [{"message": "bad name \ud800"}]},  # a lone surrogate from a client
        {"extensions": {"big": 2**70}},
    ):
        assert encode_json(data) == json.dumps(data, separators=(",", ":")).encode()


def test_a_non_finite_float_is_written_as_null_not_as_invalid_json() -> None:
    assert json.loads(encode_json({"data": {"x": math.nan, "y": math.inf}})) == {
        "data": {"x": None, "y": None}
    }
