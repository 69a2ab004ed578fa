"""Each adapter's ``settings.example.toml`` is a configuration its adapter takes: read by the SDK
(``AdapterSettings.from_file``, as ``hub adapter run … --config`` reads it) and checked by the adapter's own
configuration code, with the files it names (secrets, certificates) put where it names them in a scratch directory.
An operator starts from these files; a key the code no longer knows, or a value it refuses, fails here instead of at
a county bureau's first start. (video_conference's and national_forestry's are also checked in their own tests.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.sdk import AdapterSettings
from hub.settings import PROJECT_ROOT

ADAPTERS = sorted(p.parent.name for p in PROJECT_ROOT.glob("adapters/*/settings.example.toml"))


def _with_files(extra: dict[str, Any], where: Path) -> dict[str, Any]:
    """``extra`` with every ``*_file`` it names made under ``where`` (a secret's text, or a placeholder PEM)."""
    out = dict(extra)
    for name, value in extra.items():
        if name.endswith("_file") and isinstance(value, str):
            path = where / name
            path.write_text("example-secret\n" if "token" in name else "-----BEGIN X-----\n-----END X-----\n")
            out[name] = str(path)
    return out


def test_every_adapter_ships_an_example() -> None:
    assert ADAPTERS == ["approval_db", "local_bureau", "national_forestry", "provincial_gov", "video_conference"]


@pytest.mark.parametrize("name", ADAPTERS)
def test_the_example_settings_are_taken_by_the_adapter(name: str, tmp_path: Path) -> None:
    settings = AdapterSettings.from_file(PROJECT_ROOT / "adapters" / name / "settings.example.toml")
    assert settings.system and settings.retry_limit >= 1
    extra = _with_files(dict(settings.extra or {}), tmp_path)
    if name == "approval_db":
        from adapters.approval_db.adapter import Config as ApprovalConfig

        assert ApprovalConfig.from_settings(settings).dsn.startswith("postgresql://")
    elif name == "local_bureau":
        from adapters.local_bureau.adapter import Config as BureauConfig

        config = BureauConfig.from_extra(extra)
        assert config.agency_code == "11222424014107528Y"
    elif name == "provincial_gov":
        from adapters.provincial_gov.adapter import Config as GovConfig

        assert GovConfig.from_extra(extra).cert_file == extra["cert_file"]
    elif name == "video_conference":
        from adapters.video_conference.adapter import Config as VideoConfig

        assert VideoConfig.from_extra(extra).platform_url.startswith("https://")
    elif name == "national_forestry":
        from adapters.national_forestry.adapter import Folders

        assert Folders.from_extra(extra).inbox.is_absolute()
    else:  # a new adapter: say how its configuration is checked here
        raise AssertionError(f"no configuration check for adapter {name}")


@pytest.mark.parametrize("name", ["local_bureau", "provincial_gov", "video_conference"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0])
def test_a_time_setting_must_be_a_positive_finite_number(name: str, value: float, tmp_path: Path) -> None:
    """TOML has nan and inf: ``retry_initial = nan`` is a float, and was taken (``nan <= 0`` is False) — every retry
    would then wait nan seconds. Each adapter's settings check refuses it with the adapter's code."""
    import importlib

    from adapters.sdk import ConfigurationError

    settings = AdapterSettings.from_file(PROJECT_ROOT / "adapters" / name / "settings.example.toml")
    extra = _with_files(dict(settings.extra or {}), tmp_path)
    config = importlib.import_module(f"adapters.{name}.adapter").Config
    config.from_extra(extra)  # the example as it stands is taken
    with pytest.raises(ConfigurationError, match="positive number of seconds"):
        config.from_extra({**extra, "retry_initial": value})
