"""The systemd units of deploy/systemd (docs/operations.md, "Running it under systemd"): each passes
``systemd-analyze verify`` (an unknown or misspelt key is a finding, not silence), starts a command the hub's CLI
takes with the options given, stops within the time its process needs, and the example environment file sets only
variables the hub reads."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hub.cli import build_parser
from hub.settings import PROJECT_ROOT, Settings

UNITS = PROJECT_ROOT / "deploy" / "systemd"
NAMES = ["forestry-hub.service", "forestry-hub-gateway.service", "forestry-hub-ops.service"]


def _service(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name, encoding="utf-8")
    return parser["Service"]


@pytest.mark.parametrize("name", NAMES)
def test_the_unit_passes_systemd_analyze_verify(name: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze (Debian's systemd package) is needed to check the units"
    hub = Path(sys.executable).parent / "hub"
    text = (UNITS / name).read_text(encoding="utf-8")
    # where this checkout's hub is, and the environment file optional (this machine has no /etc/forestry-hub)
    text = text.replace("/opt/forestry-hub/.venv/bin/hub", str(hub)).replace("EnvironmentFile=", "EnvironmentFile=-")
    (tmp_path / name).write_text(text, encoding="utf-8")
    done = subprocess.run([analyze, "verify", f"./{name}"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), done


@pytest.mark.parametrize("name", NAMES)
def test_the_unit_starts_a_command_the_cli_takes(name: str) -> None:
    service = _service(name)
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/opt/forestry-hub/.venv/bin/hub"
    build_parser().parse_args(argv[1:])  # SystemExit(2) on an option the command does not take
    assert service["User"] == "forestry-hub" and service["EnvironmentFile"] == "/etc/forestry-hub/hub.env"
    assert "/var/lib/forestry-hub" in service["ReadWritePaths"] and service["ProtectSystem"] == "strict"


def test_the_units_give_a_stopping_process_its_time() -> None:
    """hub run's supervisor waits 60 s for its workers (hub/pipeline/supervisor.py); a gateway drains at most 30 s
    (HUB_GATEWAY_DRAIN_S), then cuts long polls after 5 s: systemd must not kill either before."""
    supervisor = (PROJECT_ROOT / "hub" / "pipeline" / "supervisor.py").read_text(encoding="utf-8")
    waits = int(re.search(r"deadline = time\.monotonic\(\) \+ (\d+)", supervisor).group(1))  # type: ignore[union-attr]
    assert int(_service("forestry-hub.service")["TimeoutStopSec"]) > waits
    assert int(_service("forestry-hub-gateway.service")["TimeoutStopSec"]) > 30 + 5
    for name in NAMES[:2]:  # SIGTERM to the supervisor alone: it stops its children in order
        assert _service(name)["KillMode"] == "mixed"
    assert int(_service("forestry-hub-gateway.service")["LimitNOFILE"]) >= 65536


def test_the_example_environment_sets_only_what_the_hub_reads() -> None:
    settings = {"HUB_" + name.upper() for name in Settings.__dataclass_fields__}
    source = "\n".join(p.read_text(encoding="utf-8") for p in (PROJECT_ROOT / "hub").rglob("*.py"))
    lines = (UNITS / "hub.env.example").read_text(encoding="utf-8").splitlines()
    names = [line.split("=", 1)[0] for line in lines if line.strip() and not line.startswith("#")]
    assert names and all(n.startswith("HUB_") for n in names)
    unread = [n for n in names if n not in settings and f'"{n}"' not in source]
    assert not unread, f"hub.env.example sets variables the hub does not read: {unread}"
    Settings.from_env({k: v for k, v in (line.split("=", 1) for line in lines if "=" in line and line[0] != "#")})
