"""hub.jsonenc.encoder writes exactly what json.JSONEncoder with the same options writes."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from datetime import datetime
from typing import Any

import pytest

from hub.jsonenc import encoder

OBJECTS: list[Any] = [
    {"service": "document.official/1", "sha256": "ab" * 32, "classification": "秘密", "to": ["a", "b"], "t": "x"},
    {"z": 1, "a": [1, 2.5, -0.0, 1e300, True, False, None], "m": {"y": {}, "x": []}, "中": '文\n"\\\u2028'},
    [7, "2026-11-28T20:00:00.123456Z", "delivered", None, "hub", '{"a":1}', "00" * 32],
    OrderedDict([("b", 1), ("a", 2)]),
    {1: "int key", "1.5": 2, False: "bool key"},
    'just a string with 引号 " and \t',
    42,
    [],
    {},
]
OPTIONS: list[dict[str, Any]] = [
    {"sort_keys": True, "ensure_ascii": False, "separators": (",", ":"), "allow_nan": False},
    {"ensure_ascii": False, "separators": (",", ":"), "allow_nan": False},
    {"ensure_ascii": False, "default": str},
    {},
]


@pytest.mark.parametrize("options", OPTIONS)
def test_the_text_is_jsonencoders(options: dict[str, Any]) -> None:
    fast = encoder(**options)
    for obj in OBJECTS:
        try:
            expected = json.JSONEncoder(**options).encode(obj)
        except TypeError as exc:  # sort_keys over keys of mixed types
            with pytest.raises(TypeError, match=str(exc)):
                fast(obj)
            continue
        assert fast(obj) == expected
    assert fast(OBJECTS[0]) == fast(OBJECTS[0])  # reusable


def test_errors_are_jsonencoders() -> None:
    strict = encoder(allow_nan=False)
    with pytest.raises(ValueError, match="Out of range float"):
        strict({"x": math.nan})
    with pytest.raises(TypeError, match="not JSON serializable"):
        strict({"when": datetime(2026, 1, 1)})
    assert encoder(default=str)({"when": datetime(2026, 1, 1)}) == '{"when": "2026-01-01 00:00:00"}'
    assert encoder()({"x": math.inf}) == '{"x": Infinity}'
