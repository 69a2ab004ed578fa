"""Every valid sample of every service validates; every invalid sample is rejected with the code in its name
(``samples/invalid/<CODE>__<what>.xml``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.envelope import parse
from hub.errors import CODES, HubError
from hub.settings import PROJECT_ROOT
from hub.validation import SchemaRegistry

SERVICES = PROJECT_ROOT / "schemas" / "services"
VALID = sorted(SERVICES.glob("*/*/samples/valid/*.xml"))
INVALID = sorted(SERVICES.glob("*/*/samples/invalid/*.xml"))


def _id(p: Path) -> str:
    return f"{p.parts[-5]}/{p.parts[-4]}/{p.name}"


def test_every_service_has_valid_and_invalid_samples(registry: SchemaRegistry) -> None:
    for s in registry.all():
        assert list(s.samples("valid")), f"{s.service_id} has no valid sample"
        assert list(s.samples("invalid")), f"{s.service_id} has no invalid sample"


@pytest.mark.parametrize("path", VALID, ids=_id)
def test_valid_sample_validates(path: Path, registry: SchemaRegistry) -> None:
    env = registry.validate(parse(path.read_bytes()))
    assert env.service == path.parts[-5]
    assert env.version == int(path.parts[-4])
    assert env.body is not None


@pytest.mark.parametrize("path", INVALID, ids=_id)
def test_invalid_sample_is_rejected_with_its_code(path: Path, registry: SchemaRegistry) -> None:
    expected = path.name.split("__", 1)[0]
    assert expected in CODES, f"{path.name}: {expected} is not a registered error code"
    with pytest.raises(HubError) as info:
        registry.validate(parse(path.read_bytes()))
    assert info.value.code == expected, info.value.describe()
