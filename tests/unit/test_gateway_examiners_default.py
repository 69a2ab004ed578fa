"""How many examiner processes ``hub gateway`` and ``hub run --gateway`` start (issue 11): one per core the process may
run on, at most four, none on a single core, unless ``--examiners`` or ``HUB_GATEWAY_EXAMINERS`` says otherwise;
``GatewaySettings`` built by code take what they are given (0 unless told)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.cli import build_parser
from hub.commands.gateway import gateway_settings
from hub.errors import ConfigError
from hub.gateway.config import MAX_AUTO_EXAMINERS, GatewaySettings
from hub.settings import Settings


@pytest.mark.parametrize(
    ("cores", "expected"), [(1, 0), (2, 2), (3, 3), (4, 4), (8, MAX_AUTO_EXAMINERS), (64, MAX_AUTO_EXAMINERS)]
)
def test_auto_examiners_follow_the_cores(cores: int, expected: int) -> None:
    assert MAX_AUTO_EXAMINERS == 4
    assert GatewaySettings.auto_examiners(cores) == expected


def test_auto_examiners_count_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert GatewaySettings.auto_examiners() == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {5}, raising=False)
    assert GatewaySettings.auto_examiners() == 0


def test_settings_built_by_code_examine_in_the_gateway_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUB_GATEWAY_EXAMINERS", raising=False)
    assert GatewaySettings.for_state(tmp_path).examiners == 0


def _settings(tmp_path: Path, argv: list[str]) -> GatewaySettings:
    args = build_parser().parse_args(argv)
    prefix = "gateway-" if argv[0] == "run" else ""
    return gateway_settings(args, Settings(state_dir=tmp_path), prefix=prefix)


@pytest.mark.parametrize("command", [["gateway"], ["run", "--gateway"]])
def test_the_commands_use_the_cores_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.delenv("HUB_GATEWAY_EXAMINERS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert _settings(tmp_path, command).examiners == 2
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert _settings(tmp_path, command).examiners == 0


def test_the_option_and_the_environment_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setenv("HUB_GATEWAY_EXAMINERS", "0")
    assert _settings(tmp_path, ["gateway"]).examiners == 0
    assert _settings(tmp_path, ["gateway", "--examiners", "1"]).examiners == 1
    assert _settings(tmp_path, ["run", "--gateway", "--gateway-examiners", "3"]).examiners == 3
    monkeypatch.delenv("HUB_GATEWAY_EXAMINERS")
    assert _settings(tmp_path, ["gateway", "--examiners", "0"]).examiners == 0


def test_a_wrong_count_is_refused_with_a_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_GATEWAY_EXAMINERS", "two")
    with pytest.raises(SystemExit, match="HUB_GATEWAY_EXAMINERS must be a number of processes"):
        _settings(tmp_path, ["gateway"])
    monkeypatch.delenv("HUB_GATEWAY_EXAMINERS")
    with pytest.raises(SystemExit, match=r"--examiners must be 0 or more \(the gateway's examiner processes\), not -1"):
        _settings(tmp_path, ["gateway", "--examiners", "-1"])
    with pytest.raises(SystemExit, match="--gateway-examiners must be 0 or more"):
        _settings(tmp_path, ["run", "--gateway", "--gateway-examiners", "-2"])


def test_one_variable_sets_how_often_the_directory_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # HUB_DIRECTORY_REFRESH_S: the workers' and the examination's Settings.directory_refresh_s, and the gateway's
    # client identification here; nonsense is refused with a sentence, an override given by code wins
    monkeypatch.delenv("HUB_DIRECTORY_REFRESH_S", raising=False)
    assert GatewaySettings.for_state(tmp_path).directory_refresh_s == 30.0
    monkeypatch.setenv("HUB_DIRECTORY_REFRESH_S", "5")
    assert GatewaySettings.for_state(tmp_path).directory_refresh_s == 5.0
    assert Settings.from_env().directory_refresh_s == 5
    assert GatewaySettings.for_state(tmp_path, directory_refresh_s=1.0).directory_refresh_s == 1.0
    for nonsense in ("0", "-3", "soon"):
        monkeypatch.setenv("HUB_DIRECTORY_REFRESH_S", nonsense)
        # both refuse it with a sentence (0 would have every process ask PostgreSQL without a pause)
        with pytest.raises(ConfigError, match="HUB_DIRECTORY_REFRESH_S must be"):
            GatewaySettings.for_state(tmp_path)
        with pytest.raises(ConfigError, match="HUB_DIRECTORY_REFRESH_S must be"):
            Settings.from_env()
