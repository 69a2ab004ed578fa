"""hub.slots: a frozen slots dataclass made through straight slot stores is the same object, as immutable."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any

import pytest

from hub.slots import slot_filler, straight_init


def _pair() -> tuple[type, type]:
    def make() -> type:
        @dataclass(frozen=True, slots=True)
        class Record:
            a: str
            b: int
            c: tuple[str, ...] = ()
            d: str | None = None
            e: dict[str, Any] = field(default_factory=dict)

        return Record

    return make(), straight_init(make())


def test_straight_init_makes_the_same_objects_as_the_generated_init() -> None:
    plain, fast = _pair()
    for args, kwargs in [
        (("x", 1), {}),
        (("x", 1, ("t",)), {"d": "y"}),
        ((), {"a": "x", "b": 2, "e": {"k": 1}}),
        (("x",), {"b": 3, "c": ("u", "v"), "d": None}),
    ]:
        p, f = plain(*args, **kwargs), fast(*args, **kwargs)
        assert dataclasses.astuple(p) == dataclasses.astuple(f)
        assert repr(p) == repr(f)
    assert str(inspect.signature(fast)) == str(inspect.signature(plain))
    one, two = fast("x", 1), fast("x", 1)
    assert one == two and one.e == {} and one.e is not two.e  # a fresh default per object, as the factory gives
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.a = "y"  # type: ignore[misc]
    with pytest.raises(TypeError):
        fast("x")  # b is missing
    with pytest.raises(TypeError):
        fast("x", 1, f=2)  # no such field


def test_straight_init_refuses_what_it_cannot_reproduce() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    with pytest.raises(TypeError, match="slot"):
        straight_init(NoSlots)

    @dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            pass

    with pytest.raises(TypeError, match="__post_init__"):
        straight_init(Checked)

    @dataclass(frozen=True, slots=True)
    class Derived:
        a: int
        b: int = field(init=False, default=0)

    with pytest.raises(TypeError, match="outside __init__"):
        straight_init(Derived)


def test_slot_filler_stores_every_field_in_order() -> None:
    plain, _ = _pair()
    fill = slot_filler(plain)
    obj = object.__new__(plain)
    fill(obj, "x", 1, ("t",), "d", {"k": 1})
    assert obj == plain("x", 1, ("t",), "d", {"k": 1})
