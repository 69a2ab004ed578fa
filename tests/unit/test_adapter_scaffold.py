"""`hub adapter new|enrol` without services: what the scaffold picks for a system (from the directory, the routes
and the samples), that every system of the demo directory gets a package that passes ruff as the project runs it,
the agency side of enrolment and ``--accept`` with a bundle from a throw-away CA (key mismatch, foreign root), and
the refusals with their stable codes."""

from __future__ import annotations

import base64
import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hub.cli import main
from hub.commands.adapter import (
    BUNDLE_FORMAT,
    CODES,
    AdapterCommandError,
    class_name,
    load_adapter,
    plan_scaffold,
    render_scaffold,
)
from hub.directory import load_directory
from hub.envelope import Envelope, parse
from hub.settings import PROJECT_ROOT
from hub.trust import keys, pki
from hub.validation import SchemaRegistry

DIRECTORY = PROJECT_ROOT / "routes" / "directory.xml"
REFUSAL = re.compile(r"^hub: ([A-Z_]+): (.+?) — (.+)$")


def plan(system: str):  # type: ignore[no-untyped-def]
    return plan_scaffold(
        system, directory_file=DIRECTORY, routes_dir=PROJECT_ROOT / "routes", schemas_dir=PROJECT_ROOT / "schemas"
    )


def refusal(err: str) -> tuple[str, str]:
    m = REFUSAL.match(err.strip().splitlines()[-1])
    assert m, err
    assert CODES[m.group(1)] == m.group(2)
    return m.group(1), m.group(3)


# ------------------------------------------------------------------------------------------------ the plan


def test_a_county_oa_system_handles_documents_from_its_city_and_replies_with_a_receipt() -> None:
    p = plan("county-220182-oa")
    assert (p.handled, p.peer, p.reply) == ("document.official", "city-220100-oa", "document.receipt")
    assert (p.sent, p.target) == ("document.official", "city-220100-oa")
    assert p.has_title and p.incoming_sample == p.outgoing_sample == "document.official.xml"


def test_a_province_system_handles_info_reports() -> None:
    p = plan("prov-220000-oa")
    assert p.handled == "info.report" and p.reply is None
    assert load_directory(DIRECTORY).system(p.peer).agency != p.agency


def test_the_samples_are_valid_and_sent_by_the_system(registry: SchemaRegistry) -> None:
    for system in ("county-220182-oa", "prov-220000-oa", "prov-220000-video"):
        p = plan(system)
        env = Envelope.from_tree(parse(p.samples[p.outgoing_sample]))
        registry.validate(parse(p.samples[p.outgoing_sample]))
        assert (env.sender.system, env.sender.agency) == (system, p.agency)
        assert [(r.agency, r.system, r.role) for r in env.recipients] == [(p.target_agency, p.target, "to")]
        assert env.service == p.sent
        incoming = Envelope.from_tree(parse(p.samples[p.incoming_sample]))
        assert incoming.service == p.handled


def test_class_names_follow_the_typed_messages() -> None:
    assert class_name("document.official") == "DocumentOfficial"
    assert class_name("info.report") == "InfoReport"
    assert class_name("hub.error") == "HubError"


def _scaffold_all(base: Path) -> Path:
    systems = [s.id for s in load_directory(DIRECTORY).systems() if s.id != "hub"]
    for system in systems:
        name = "a_" + system.replace("-", "_")
        for rel, data in render_scaffold(name, plan(system)).items():
            path = base / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return base


def _ruff(target: Path, cwd: Path) -> None:
    ruff = Path(sys.executable).with_name("ruff")
    config = str(PROJECT_ROOT / "pyproject.toml")
    for args in (["check"], ["format", "--check"]):
        done = subprocess.run(
            [str(ruff), *args, "--config", config, "--no-cache", str(target)], capture_output=True, text=True, cwd=cwd
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_system_of_the_demo_directory_scaffolds_into_code_that_ruff_passes(tmp_path: Path) -> None:
    """As an agency's checkout sees it (adapters.sdk installed, the package its own)."""
    _scaffold_all(tmp_path)
    _ruff(tmp_path, cwd=tmp_path)
    for path in tmp_path.rglob("*"):  # templates left nothing unsubstituted
        if path.is_file() and path.suffix in (".py", ".toml"):
            assert "$" not in path.read_text(encoding="utf-8").replace("$1", ""), path


def test_the_scaffold_passes_ruff_inside_the_project(tmp_path: Path) -> None:
    """As ``make check`` sees a package scaffolded into ./adapters (adapters.sdk first-party: isort looks the typed
    messages module up)."""
    _ruff(_scaffold_all(tmp_path), cwd=PROJECT_ROOT)


def test_the_generated_adapter_handles_the_service_and_sends_the_sample(tmp_path: Path) -> None:
    files = render_scaffold("yushu_oa", plan("county-220182-oa"))
    adapter = files["adapter.py"].decode()
    assert 'SYSTEM = "county-220182-oa"' in adapter
    assert "@adapter.handles(DocumentOfficial)" in adapter and "return DocumentReceipt(" in adapter
    assert "ctx.db" in adapter
    test = files["tests/test_adapter.py"].decode()
    assert "TestHub(adapter)" in test and 'PEER, PEER_AGENCY = "city-220100-oa"' in test
    settings = files["settings.toml"].decode()
    assert 'system = "county-220182-oa"' in settings and 'home = "home"' in settings
    assert "# prefetch = 64" in settings and "预取" not in settings  # tunables commented, Chinese and English
    assert set(files) >= {"__init__.py", "tests/__init__.py", "samples/document.official.xml"}


# ------------------------------------------------------------------------------------------------ hub adapter new


def test_new_writes_the_package_and_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["adapter", "new", "yushu_oa", "--system", "county-220182-oa", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "document.official/1" in out and "hub adapter enrol --system county-220182-oa" in out
    assert (tmp_path / "yushu_oa" / "adapter.py").is_file()
    assert (tmp_path / "yushu_oa" / "samples" / "document.official.xml").is_file()
    assert main(["adapter", "new", "yushu_oa", "--system", "county-220182-oa", "--dir", str(tmp_path)]) == 2
    assert refusal(capsys.readouterr().err)[0] == "ADAPTER_EXISTS"


@pytest.mark.parametrize(
    ("argv", "code", "exit"),
    [
        (["adapter", "new", "x_oa", "--system", "county-999999-oa"], "ADAPTER_NOT_IN_DIRECTORY", 1),
        (["adapter", "new", "x_oa", "--system", "hub"], "ADAPTER_NOT_IN_DIRECTORY", 1),
        (["adapter", "new", "yushu-oa", "--system", "county-220182-oa"], "ADAPTER_NAME", 2),
        (["adapter", "new", "sdk", "--system", "county-220182-oa"], "ADAPTER_NAME", 2),
    ],
)
def test_new_refusals(
    argv: list[str], code: str, exit: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--dir", str(tmp_path)]) == exit
    assert refusal(capsys.readouterr().err)[0] == code
    assert not any(tmp_path.iterdir())


def test_codes_are_registered() -> None:
    with pytest.raises(ValueError):
        AdapterCommandError("NOT_A_CODE", "x")
    assert all(re.fullmatch(r"ADAPTER_[A-Z_]+", c) and title for c, title in CODES.items())


# ------------------------------------------------------------------------------------------------ enrolment


AGENCY, SYSTEM = "11220182013552847D", "county-220182-oa"


def _bundle(ca_dir: Path, csr: bytes, *, url: str = "amqp://u:p@127.0.0.1:5672/") -> dict[str, object]:
    """What ``hub adapter approve`` writes, from a throw-away CA (no register, no broker)."""
    if not pki.is_initialised(ca_dir):
        pki.init_ca(ca_dir, "pw")
    issued = pki.issue_from_csr(ca_dir, "pw", csr)
    paths = pki.PkiPaths(ca_dir)
    assert issued.issuer is not None
    return {
        "format": BUNDLE_FORMAT,
        "system": issued.system,
        "agency": issued.agency,
        "serial": issued.serial,
        "not_after": issued.certificate.not_valid_after_utc.isoformat(),
        "certificate_chain": pki.certificate_pem(issued.certificate, issued.issuer).decode(),
        "hub_root": paths.root_cert.read_text(),
        "crls": {p.name: base64.b64encode(p.read_bytes()).decode() for p in paths.crl_dir.glob("*.crl")},
        "broker": {"url": url, "namespace": "hubtest-x", "user": "hubtest-x.county-220182-oa"},
        "hub_agency": pki.DEFAULT_HUB_AGENCY,
    }


def _write(path: Path, bundle: dict[str, object]) -> Path:
    path.write_text(json.dumps(bundle), encoding="utf-8")
    return path


def test_enrol_makes_a_private_key_and_a_csr_and_never_overwrites_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert main(["adapter", "enrol", "--system", SYSTEM, "--agency", AGENCY, "--home", str(home)]) == 0
    out = capsys.readouterr().out
    # the request's path as it was written, not its bare name (run beside it, the bare name was not found)
    assert f"hub adapter approve {home / 'request.csr'} --out " in out and "--accept" in out
    assert stat.S_IMODE((home / "key.pem").stat().st_mode) == 0o600
    agency, system, _ = pki.validate_csr(pki.load_csr((home / "request.csr").read_bytes()))
    assert (agency, system) == (AGENCY, SYSTEM)
    assert main(["adapter", "enrol", "--system", SYSTEM, "--agency", AGENCY, "--home", str(home)]) == 2
    assert refusal(capsys.readouterr().err)[0] == "ADAPTER_EXISTS"
    assert main(["adapter", "enrol", "--system", SYSTEM, "--agency", "not-a-code", "--home", str(tmp_path / "x")]) == 2
    assert refusal(capsys.readouterr().err)[0] == "ADAPTER_SETTINGS"
    assert not (tmp_path / "x" / "key.pem").exists()


def test_accept_lays_out_the_home_the_sdk_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from adapters.sdk import AdapterSettings
    from adapters.sdk._trust import load_signer

    home = tmp_path / "home"
    assert main(["adapter", "enrol", "--system", SYSTEM, "--agency", AGENCY, "--home", str(home)]) == 0
    bundle = _write(tmp_path / "b.json", _bundle(tmp_path / "ca", (home / "request.csr").read_bytes()))
    assert main(["adapter", "enrol", "--accept", str(bundle), "--home", str(home)]) == 0
    assert f"enrolled {AGENCY}/{SYSTEM}" in capsys.readouterr().out
    settings = AdapterSettings(system=SYSTEM, home=home)
    assert settings.broker() == ("amqp://u:p@127.0.0.1:5672/", "hubtest-x")
    assert load_signer(settings.key_path, settings.cert_path).identity.system == SYSTEM
    assert settings.root_cert_path.read_bytes() == (tmp_path / "ca" / "root-ca.pem").read_bytes()
    assert sorted(p.name for p in settings.crl_dir.iterdir()) == ["issuing-ca.crl", "root-ca.crl"]
    assert stat.S_IMODE(settings.broker_path.stat().st_mode) == 0o600


def test_accept_refuses_a_certificate_for_another_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert main(["adapter", "enrol", "--system", SYSTEM, "--agency", AGENCY, "--home", str(home)]) == 0
    other = pki.make_csr(keys.generate_private_key(), AGENCY, SYSTEM)
    from cryptography.hazmat.primitives import serialization

    bundle = _write(tmp_path / "b.json", _bundle(tmp_path / "ca", other.public_bytes(serialization.Encoding.PEM)))
    capsys.readouterr()
    assert main(["adapter", "enrol", "--accept", str(bundle), "--home", str(home)]) == 1
    assert refusal(capsys.readouterr().err)[0] == "ADAPTER_KEY_MISMATCH"
    assert not (home / "cert.pem").exists() and not (home / "broker.json").exists()


def test_accept_refuses_a_chain_that_does_not_lead_to_the_bundles_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert main(["adapter", "enrol", "--system", SYSTEM, "--agency", AGENCY, "--home", str(home)]) == 0
    bundle = _bundle(tmp_path / "ca", (home / "request.csr").read_bytes())
    pki.init_ca(tmp_path / "other", "pw")
    bundle["hub_root"] = (tmp_path / "other" / "root-ca.pem").read_text()
    capsys.readouterr()
    assert main(["adapter", "enrol", "--accept", str(_write(tmp_path / "b.json", bundle)), "--home", str(home)]) == 1
    assert refusal(capsys.readouterr().err)[0] == "ADAPTER_CHAIN_UNTRUSTED"
    assert not (home / "cert.pem").exists()


def test_accept_refuses_what_is_not_a_bundle_or_has_no_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    bad = tmp_path / "b.json"
    bad.write_text("{}", encoding="utf-8")
    assert main(["adapter", "enrol", "--accept", str(bad), "--home", str(home)]) == 2
    assert refusal(capsys.readouterr().err)[0] == "ADAPTER_NOT_ENROLLED"
    assert main(["adapter", "enrol", "--system", SYSTEM, "--agency", AGENCY, "--home", str(home)]) == 0
    for text in ("{}", "not json", json.dumps({"format": BUNDLE_FORMAT, "certificate_chain": "x", "hub_root": "y"})):
        bad.write_text(text, encoding="utf-8")
        capsys.readouterr()
        assert main(["adapter", "enrol", "--accept", str(bad), "--home", str(home)]) == 1
        assert refusal(capsys.readouterr().err)[0] == "ADAPTER_BUNDLE_INVALID"


# ------------------------------------------------------------------------------------------------ hub adapter run


def test_load_adapter_finds_a_package_or_a_module_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "mine_oa"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "adapter.py").write_text('from adapters.sdk import Adapter\n\nadapter = Adapter("county-220182-oa")\n')
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    own = tmp_path / "adapters" / "own_oa"  # an agency's checkout: ./adapters/NAME, ./adapters not a package
    own.mkdir(parents=True)
    (own / "__init__.py").write_text("")
    (own / "adapter.py").write_text('from adapters.sdk import Adapter\n\nadapter = Adapter("city-220100-oa")\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        assert load_adapter("mine_oa").system == "county-220182-oa"
        assert load_adapter("mine_oa.adapter").system == "county-220182-oa"
        assert load_adapter("own_oa").system == "city-220100-oa"
        with pytest.raises(AdapterCommandError) as info:
            load_adapter("nothing_here")
        assert info.value.code == "ADAPTER_MODULE"
        with pytest.raises(AdapterCommandError) as info:
            load_adapter("broken")
        assert info.value.code == "ADAPTER_MODULE" and "RuntimeError: boom" in info.value.detail
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] in ("mine_oa", "broken", "own_oa")]:
            del sys.modules[name]


def test_run_refuses_settings_of_another_system(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "settings.toml"
    config.write_text('system = "city-220100-oa"\nhome = "home"\n', encoding="utf-8")
    pkg = tmp_path / "other_oa"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "adapter.py").write_text('from adapters.sdk import Adapter\n\nadapter = Adapter("county-220182-oa")\n')
    sys.path.insert(0, str(tmp_path))
    try:
        assert main(["adapter", "run", "other_oa", "--config", str(config)]) == 2
        code, detail = refusal(capsys.readouterr().err)
        assert code == "ADAPTER_SETTINGS" and "city-220100-oa" in detail
        config.write_text("system = 1\n[[", encoding="utf-8")
        assert main(["adapter", "run", "other_oa", "--config", str(config)]) == 2
        assert refusal(capsys.readouterr().err)[0] == "ADAPTER_SETTINGS"
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.split(".")[0] == "other_oa"]:
            del sys.modules[name]


def test_the_command_list_names_the_adapter_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["adapter", "--help"])
    out = capsys.readouterr().out
    assert all(word in out for word in ("new", "enrol", "approve", "run"))


def test_the_generated_settings_show_every_tunable_with_its_true_default() -> None:
    """Uncommented, each ``# name = value`` line of the generated settings.toml is a setting the SDK takes, and its
    value is the SDK's own default (the file says "the defaults shown"); every tunable of AdapterSettings is there."""
    import dataclasses
    import re
    import tomllib

    from adapters.sdk import AdapterSettings

    text = render_scaffold("yushu_oa", plan("county-220182-oa"))["settings.toml"].decode()
    tunables = text.split("# [adapter]")[0]  # after it: the adapter's own example values (settings.extra)
    shown = tomllib.loads("\n".join(m.group(1) for m in re.finditer(r"^# ([a-z_]+ = .+)$", tunables, re.M)))
    defaults = {f.name: f.default for f in dataclasses.fields(AdapterSettings) if f.default is not dataclasses.MISSING}
    assert set(shown) == set(defaults), set(shown) ^ set(defaults)
    for name, value in shown.items():
        assert value == defaults[name], name
    AdapterSettings.from_mapping({"system": "county-220182-oa", "home": "home", **shown})


def test_the_scaffold_keeps_the_adapters_secrets_out_of_git(tmp_path: Path) -> None:
    """``hub adapter enrol --home adapters/NAME/home`` (what the scaffold prints) writes the private key and the broker
    password there: ``git add adapters/NAME`` took them along. The scaffold's .gitignore leaves them out (git's own
    check on a repository of its own)."""
    import subprocess

    target = tmp_path / "repo" / "adapters" / "yushu_oa"
    for rel, data in render_scaffold("yushu_oa", plan("county-220182-oa")).items():
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        (target / rel).write_bytes(data)
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    secrets = ["home/key.pem", "home/broker.json", "home/request.csr", "county-220182-oa.enrolment.json"]
    kept = ["adapter.py", "settings.toml", "tests/test_adapter.py"]
    for rel in secrets + kept:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        (target / rel).touch()
    ignored = subprocess.run(
        ["git", "check-ignore", *(str(target / rel) for rel in secrets + kept)],
        cwd=tmp_path / "repo",
        capture_output=True,
        text=True,
    ).stdout.split()
    assert sorted(Path(p).relative_to(target).as_posix() for p in ignored) == sorted(secrets)
