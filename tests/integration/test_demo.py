"""``make demo`` end to end (``python -m hub.demo``) on the real RabbitMQ and PostgreSQL, in databases, namespaces
and state dirs of its own: every stage runs, every scenario step checks itself and passes, a second checkout of the
project keeps its own installation and evidence chain, a second run reuses the installation, the hub it leaves
running is stopped by ``--stop-only``, and a missing service is explained without a traceback. The full runs take a
minute or more each, so one test makes three of them and checks all of that on them (four before)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from yarl import URL

from hub.envelope import Envelope, parse
from hub.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.integration

SCENARIO = PROJECT_ROOT / "hub" / "demo_scenario"


def demo(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub.demo", *args],
        env=env or dict(os.environ),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def _drop_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(str(URL(Settings.from_env().pg_dsn).with_path("/postgres")))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr


def _counts(stdout: str, label: str) -> dict[str, int]:
    line = next(ln for ln in stdout.splitlines() if ln.strip().startswith(label))
    return {state: int(n) for state, n in re.findall(r"([a-z_]+) (\d+)", line)}


def _check_first_run(first: subprocess.CompletedProcess[str], state: Path) -> None:
    """A new installation: every stage ran, every scenario step passed and said what it saw; ``--stop`` stopped
    the hub and the ops page."""
    _no_traceback(first)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    # 2: every sample behaved (the totals line reads n/n for valid and invalid samples)
    totals = re.search(r"合计 total\s+(\d+)/(\d+)\s+(\d+)/(\d+)", out)
    assert totals is not None, out
    v_ok, v_all, i_ok, i_all = map(int, totals.groups())
    assert v_ok == v_all > 0 and i_ok == i_all > 0
    # 3: a new installation
    assert "（新建 created）" in out and "证书中心 CA：为吉林省林业和草原局" in out
    # 5: each step passed and said what it saw (the ops step's /metrics count includes what the process engine sent
    # by then: at least the 12 messages of steps a–l)
    metrics = re.search(
        r"/metrics counts (\d+) accepted this run; the duty operator found step a's notice and its "
        r"trace \(12 deliveries\); the auditor sees the security officer's release",
        out,
    )
    assert metrics is not None and int(metrics.group(1)) >= 12, out
    assert re.search(r"^  ✘ ", out, re.M) is None, out  # no step failed (a status listing may mark a person ✘)
    for expected in (
        "12 deliveries to 9 bureaus, hub-signed receipt",
        "county → its sibling counties under Changchun: 2 deliveries",
        "the document.receipt reaches the province's office system",
        "2 deliveries via the emergency lane at priority 9",
        "GATE_CLASSIFICATION",
        "the duty operator was refused (403) and the security officer released it with a reason, then it was delivered",
        "refused with SIG_DIGEST",
        "delivered once, the second copy answered 'duplicate'",
        "refused with ENV_LIMIT at the byte gate; the 特急 alert sent right after it was delivered",
        "workers sign with the rotated key",
        "typed, bound to the query, signed by the database system and the hub",
        "the provincial portal over HTTPS only: submit → 202 with the hub-signed receipt",
        "the portal stopped polling: 3 s later the gateway let its queue go, the approval system's next status waited "
        "ready in RabbitMQ (the ops page: polls from time to time, one waiting, its requests counted;",
        "the portal's expired TLS certificate was answered 403 CERT_EXPIRED with its date; a certificate of another CA "
        "failed the TLS handshake; the ops page listed both (under the portal, and under TLS handshakes from 127.0.0.1)",
        "an adapter on the SDK over HTTPS only (gateway_url), through the county's proxy (gateway_proxy; its "
        "self-check passed every step): 桦甸 received 吉林市's notice by long poll, its handler's",
        "签收 receipt went back over HTTPS and reached 吉林市 in",
        "one way per system: 吉林市, subscribed to its queue over RabbitMQ, polled over HTTPS and was refused "
        "(409 GATEWAY_LINK_CONFLICT); the gateway did not start reading its queue; the ops page listed the refusal",
        # the five agency adapters (steps n–r), each in its own process with its simulated outside system
        "the provincial OA's notice reached all 9 city bureaus (city-220100-oa: delivered)",
        "Siping's 签收 receipt reached the provincial OA's callback",
        "the national outbox's statistics report and notice reached the provincial OA",
        "the province's report for the nation landed in its inbox folder",
        "Dunhua's fire alert reached Wangqing's duty desk webhook",
        "the desk's acknowledgement went back to Dunhua as emergency.ack",
        "the meeting was booked on the platform; the booker and both branch venues got meeting.notice",
        "the conflicting booking was refused: VC_SLOT_TAKEN",
        "the booking waited in RabbitMQ (",
        ".later.",
        "), put off by the adapter's Retry, not held by it; booked once when the platform was back",
        "the Dunhua desk's application left its database outbox and reached the provincial approval system",
        "the status and the decision came back into the desk's database",
        "tampered copies from one system; another system's letter sent right after was delivered",
        "a directory adding 九台区林业局 with its certificate registered (cert-sha256) loaded while the hub runs: no "
        "restart (the ops overview's Directory row: version",
        "processes on it), the new system's report over HTTPS accepted and delivered",
        "a second certificate issued for 九台 (",
        ") was refused 403 CERT_NOT_REGISTERED; the usual directory loaded back",
        "证据链完整 evidence chain intact",
        "every step behaved as expected",
    ):
        assert expected in out, f"missing {expected!r} in:\n{out}"
    # 6: the summary's figures come from PostgreSQL: 16 signed messages accepted by steps a–m (the SDK step's query
    # and answer, the portal's application over HTTPS and two statuses back — the second while it was idle —, step
    # l1's notice to 桦甸 and the 签收 receipt its adapter sent over HTTPS, step l2's report from the system added
    # while the hub ran among them), 19 by the adapters' steps n–r (step q's booking while the platform was down and
    # its notice among them) and 19 by the processes' steps s–v (receipts, applications, statuses, acknowledgements,
    # bookings, notices, confirmations), one refused at the gate; and 30 the process engine sent itself (hub-signed,
    # through the pipeline: plan forwards, resends and escalations, reminders, overdue reports, supervisions,
    # feedback, the meeting's refusal) with 47 deliveries. 4 deliveries signed for (签收) and 2 handled (办结) by
    # document.receipt; the tampered copy and the costly one were refused before their signatures could be trusted,
    # and so were the 200 tampered copies of step w's flood (whose letter from 农安 is one more accepted message, 2
    # deliveries).
    assert "hub-sent process messages 30 (deliveries 47)" in out, out
    assert _counts(out, "报文 messages") == {"accepted": 85, "rejected": 1, "released": 1}
    assert _counts(out, "投递 deliveries") == {"delivered": 133, "received": 4, "handled": 2, "blocked": 1}
    assert "refused before the signature could be trusted: 202" in out
    assert f"HUB_STATE_DIR={state}" in out and "receive --system city-220100-oa" in out
    assert "4 waiting" in out  # three from steps a–m, the provincial OA's notice (step n)
    assert "http://" not in out  # every URL printed is HTTPS (the gateway's, the ops page's)
    assert re.search(r"HTTPS 网关 gateway https://127\.0\.0\.1:\d+", out), out
    # the ops page: its URL and one demo login per role; --stop stopped it with the hub
    assert re.search(r"运维监控页面 the ops page: https://127\.0\.0\.1:\d+/", out), out
    for login in ("zhao.admin", "li.security", "sun.auditor", "wang.duty"):
        assert f"账户 login {login}" in out
    assert not (state / "ops.pid").exists()
    # 7: --stop stopped it
    assert "the hub was stopped" in out and not (state / "hub.pid").exists()


def _check_rerun(second: subprocess.CompletedProcess[str], state: Path) -> None:
    """Again on the same installation, leaving the hub running: everything is reused, what the first run left in
    a system's queue is cleared, the hub and the ops page keep running until ``--stop-only``."""
    _no_traceback(second)
    out = second.stdout
    assert second.returncode == 0, out + second.stderr
    assert "（已存在 reused）" in out and "证书中心 CA：沿用 reused" in out and "newly issued 0" in out
    assert "cleared 4 message(s) left by an earlier run" in out  # city-220100-oa's inbox from the first run
    # the agencies' 55 again; what the process engine sends on a rerun also depends on what the first run left open
    # (its alerts, its cases: the gateway step's sample application has the same case number), so only its floor
    counts = _counts(out, "报文 messages")
    by_hub = re.search(r"hub-sent process messages (\d+) ", out)
    assert by_hub is not None and int(by_hub.group(1)) >= 2 * 29, out
    assert counts["accepted"] - int(by_hub.group(1)) == 2 * 55 and (counts["rejected"], counts["released"]) == (2, 2)
    pid = int((state / "hub.pid").read_text())
    assert Path(f"/proc/{pid}").exists() and b"hub.cli" in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert "--stop-only" in out

    ops_pid = int((state / "ops.pid").read_text())
    assert b"ops" in Path(f"/proc/{ops_pid}/cmdline").read_bytes().split(b"\0")
    stopped = demo("--stop-only", "--state-dir", str(state))
    assert stopped.returncode == 0 and f"pid {pid}" in stopped.stdout, stopped.stdout + stopped.stderr
    assert not (state / "hub.pid").exists() and not (state / "ops.pid").exists()
    assert not Path(f"/proc/{ops_pid}").exists() or b"ops" not in Path(f"/proc/{ops_pid}/cmdline").read_bytes()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_missing_service_is_explained_in_both_languages_without_a_traceback(tmp_path: Path) -> None:
    port = _closed_port()
    env = dict(os.environ)
    env["HUB_AMQP_URL"] = f"amqp://guest:guest@127.0.0.1:{port}/"
    done = demo("--state-dir", str(tmp_path / "demo"), "--stop", env=env, timeout=60)
    _no_traceback(done)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"RabbitMQ 无法连接 is not reachable at 127.0.0.1:{port}" in done.stdout
    assert "make services" in done.stdout
    assert "[2/6]" not in done.stdout  # it stops before doing anything


def test_the_scenario_envelopes_are_valid_as_they_stand(registry) -> None:  # type: ignore[no-untyped-def]
    files = sorted(SCENARIO.glob("*.xml"))
    assert len(files) == 9
    ids = set()
    for path in files:
        env: Envelope = registry.validate(parse(path.read_bytes()))
        ids.add(env.message_id)
    assert len(ids) == len(files)  # stamp() maps template ids to real ones: they must not collide


def _chain_intact(args: list[str], state: Path) -> None:
    env = Settings.from_env(
        pg_dsn=str(URL(Settings.from_env().pg_dsn).with_path("/" + args[3])), namespace=args[1], state_dir=state
    ).to_env()
    done = subprocess.run(
        [sys.executable, "-m", "hub.cli", "evidence", "verify"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0 and "证据链完整" in done.stdout, done.stdout + done.stderr


@pytest.mark.time_limit(3 * 180 + 180)  # three runs, each bounded by demo()'s own 180 s, and the checks between
def test_the_demo_plays_its_scenario_in_two_checkouts_then_reruns_on_the_first(tmp_path: Path) -> None:
    """The demo, three runs (each takes a minute or more, so one test shares them):

    - clone A on a new installation (every step, ``--stop``: ``_check_first_run``);
    - clone B, issue 13: a second clone of the project on the same machine (simulated with a second checkout path,
      the names the demo derives from it, and a state directory of its own, on the one PostgreSQL and RabbitMQ)
      passes every step too, both evidence chains verify, and a demo pointed at the other's database is refused in
      one clear sentence;
    - clone A again, leaving its hub running (``_check_rerun``), its chain still intact."""
    from hub.demo import checkout_names
    from hub.transport.users import teardown_namespace

    clones = []
    for name in ("clone-a", "clone-b"):
        database, namespace = checkout_names(tmp_path / name)
        state = tmp_path / name / "var" / "demo"
        clones.append((["--namespace", namespace, "--database", database, "--state-dir", str(state)], state))
    assert clones[0][0] != clones[1][0]
    (a_args, a_state), (b_args, b_state) = clones
    try:
        _check_first_run(demo(*a_args, "--stop"), a_state)
        done = demo(*b_args, "--stop")
        _no_traceback(done)
        assert done.returncode == 0 and "证据链完整 evidence chain intact" in done.stdout, done.stdout
        for args, state in clones:  # each chain is intact after the other clone ran
            _chain_intact(args, state)

        # clone B's state directory against clone A's database: refused, clone A's evidence untouched
        done = demo("--database", a_args[3], "--namespace", a_args[1], "--state-dir", str(b_state), "--stop")
        _no_traceback(done)
        assert done.returncode == 2, done.stdout
        assert "belongs to a demo installed elsewhere" in done.stdout and "--database NAME" in done.stdout
        # … and a fresh state directory pointed at it does not drop the other clone's database to start anew
        fresh = tmp_path / "clone-c" / "var" / "demo"
        done = demo("--database", a_args[3], "--namespace", a_args[1], "--state-dir", str(fresh), "--stop")
        _no_traceback(done)
        assert done.returncode == 2 and "belongs to a demo installed elsewhere" in done.stdout, done.stdout
        _chain_intact(a_args, a_state)

        _check_rerun(demo(*a_args), a_state)
        _chain_intact(a_args, a_state)
    finally:
        for args, state in clones:
            demo("--stop-only", "--state-dir", str(state))
            asyncio.run(_drop_database(args[3]))
            asyncio.run(teardown_namespace(Settings.from_env(namespace=args[1]), args[1]))
