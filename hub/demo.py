"""``make demo`` (``python -m hub.demo``): a whole hub on this machine, a realistic scenario through it, and where
to look afterwards — in about half a minute, and again on every re-run.

    1 services      PostgreSQL, RabbitMQ and its management API are reachable (else: what to start, and how)
    2 samples       every valid sample validates, every invalid one fails with the code in its file name
    3 installation  database ``hub_demo_<tag>`` (created when missing), migrations, the provincial CA (kept across
                    runs), the directory in PostgreSQL + one RabbitMQ user per system, keys and certificates of the
                    systems the scenario uses — all under namespace ``demo-<tag>`` and state dir ``var/demo``, where
                    <tag> is a hash of this checkout's path (two clones on one machine do not share a database)
    4 the hub       ``hub run --workers 2`` in the background (pid in var/demo/hub.pid, log var/demo/hub.log);
                    an earlier demo hub is stopped first
    5 scenario      hub/demo_scenario: agencies send as themselves, recipients verify what they get; every step
                    checks its outcome, so the demo is also a self-test (exit 1 when a step misbehaves)
    6 summary       counts from PostgreSQL, and the commands to look around

``--stop`` stops the hub at the end (the integration test uses it); ``--stop-only`` just stops a running demo hub.
Expected failures (a service down, a step that misbehaves) are explained in one or two lines, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarl import URL

from hub.errors import HubError, title_of
from hub.settings import PROJECT_ROOT, Settings


#: The demo's database and namespace are named after this checkout (a hash of its path): two clones of the project on
#: one machine each get their own, so neither mixes its evidence into the other's (issue 13). The store also records
#: the installation it belongs to and refuses another one (STORE_FOREIGN_INSTALLATION) if names are forced equal.
def checkout_names(root: Path) -> tuple[str, str]:
    """(database, namespace) of the demo of the checkout at ``root``."""
    tag = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    return f"hub_demo_{tag}", f"demo-{tag}"


DEFAULT_DATABASE, DEFAULT_NAMESPACE = checkout_names(PROJECT_ROOT)
_DEMO_PREFIX = "hub_demo"
DEFAULT_STATE_DIR = PROJECT_ROOT / "var" / "demo"
DEFAULT_WORKERS = 2
PROVINCE = "11220000013544357T"  # 吉林省林业和草原局 runs the CA
DIRECTORY_FILE = "directory.xml"
READY_TIMEOUT_S = 60.0

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
OK, FAIL, NOTE = "✔", "✘", "·"


def out(line: str = "") -> None:
    print(line, flush=True)


def _rel(path: Path) -> str:
    """A path relative to the project when it is inside it (what an operator types from the checkout)."""
    absolute = Path(os.path.abspath(path))  # not resolve(): .venv/bin/python is a symlink out of the project
    try:
        return str(absolute.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(absolute)


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(width - _width(text), 0)


class DemoFailed(Exception):
    """A stage cannot continue; the message is already bilingual and says what to do."""


# ---------------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class Demo:
    settings: Settings
    admin_dsn: str
    database: str
    workers: int
    #: The HTTPS gateway's port (``hub run --gateway``): a free one, chosen when the demo starts.
    gateway_port: int = 0
    #: The ops page's port (``hub ops``): a free one, chosen when the demo starts.
    ops_port: int = 0

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "hub.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "hub.log"

    @property
    def gateway_url(self) -> str:
        return f"https://127.0.0.1:{self.gateway_port}"

    @property
    def ops_pid_file(self) -> Path:
        return self.state_dir / "ops.pid"

    @property
    def ops_log_file(self) -> Path:
        return self.state_dir / "ops.log"

    @property
    def ops_url(self) -> str:
        return f"https://127.0.0.1:{self.ops_port}/"

    def env(self) -> dict[str, str]:
        """The environment of every hub command of this installation (the hub itself, release, evidence)."""
        return self.settings.to_env()

    def export_line(self) -> str:
        s = self.settings
        pairs = [("HUB_PG_DSN", s.pg_dsn), ("HUB_NAMESPACE", s.namespace), ("HUB_STATE_DIR", str(s.state_dir))]
        return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in pairs)


def make_demo(args: argparse.Namespace) -> Demo:
    base = Settings.from_env()
    if not _DB_NAME.match(args.database):
        raise DemoFailed(f"数据库名不合法 invalid database name {args.database!r} (lower-case letters, digits, _)")
    from hub.transport.names import Names

    try:
        Names(args.namespace)
    except ValueError as exc:
        raise DemoFailed(f"命名空间不合法 invalid namespace: {exc}") from None
    url = URL(base.pg_dsn)
    admin_dsn = str(url.with_path("/postgres"))
    demo_dsn = str(url.with_path("/" + args.database))
    state_dir = Path(args.state_dir).resolve()
    # The demo's hub looks at the directory's version every 2 s, not 30: step l2 loads one while the hub runs.
    settings = base.with_(pg_dsn=demo_dsn, namespace=args.namespace, state_dir=state_dir, directory_refresh_s=2)
    from hub.demo_scenario import free_port

    return Demo(settings, admin_dsn, args.database, args.workers, free_port(), free_port())


# ---------------------------------------------------------------------------------------------------- 1 services


async def _tcp_open(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def check_services(demo: Demo) -> list[str]:
    """One bilingual line per missing service, with how to start it; empty when everything answers."""
    from hub.store.db import connect
    from hub.transport import Transport

    s = demo.settings
    missing: list[str] = []
    pg = URL(demo.admin_dsn)
    try:
        conn = await asyncio.wait_for(connect(demo.admin_dsn), 10)
        await conn.close()
        out(f"  {OK} PostgreSQL {pg.host}:{pg.port or 5432}")
    except Exception as exc:  # HubError, or asyncpg's own errors (auth, …) arrive untranslated
        why = exc.describe() if isinstance(exc, HubError) else type(exc).__name__
        missing.append(
            f"PostgreSQL 无法连接 is not reachable at {pg.host}:{pg.port or 5432} ({why}).\n"
            "      启动 start it: make services  (或 or: sudo bash scripts/ensure-services.sh; "
            "HUB_PG_DSN 指向其他服务器 points elsewhere if it runs on another host)"
        )
    amqp = URL(s.amqp_url)
    try:
        transport = await asyncio.wait_for(Transport.connect(s, client_name="hub-demo-check"), 10)
        await transport.close()
        out(f"  {OK} RabbitMQ {amqp.host}:{amqp.port or 5672}")
    except (HubError, TimeoutError) as exc:
        why = exc.describe() if isinstance(exc, HubError) else "timed out"
        missing.append(
            f"RabbitMQ 无法连接 is not reachable at {amqp.host}:{amqp.port or 5672} ({why}).\n"
            "      启动 start it: make services  (或 or: sudo rabbitmq-server -detached)"
        )
    mgmt = URL(s.amqp_management_url)
    if await _tcp_open(mgmt.host or "127.0.0.1", mgmt.port or 15672):
        out(f"  {OK} RabbitMQ 管理接口 management API {mgmt.host}:{mgmt.port}")
    else:
        missing.append(
            f"RabbitMQ 管理接口未开启 the management API is not listening on {mgmt.host}:{mgmt.port} "
            "(the hub provisions one RabbitMQ user per system through it).\n"
            "      开启 enable it: make services  (或 or: sudo rabbitmq-plugins enable rabbitmq_management)"
        )
    return missing


# ---------------------------------------------------------------------------------------------------- 2 samples


def check_samples(settings: Settings) -> list[str]:
    """Validate every sample; print the table; return one line per sample that did not behave."""
    from hub.envelope import parse
    from hub.validation import SchemaRegistry

    registry = SchemaRegistry(settings.schemas_dir)
    problems: list[str] = []
    rows: list[tuple[str, str, str, str]] = []
    totals = [0, 0, 0, 0]
    for svc in sorted(registry.all(), key=lambda s: (s.name, s.version)):
        valid = list(svc.samples("valid"))
        invalid = list(svc.samples("invalid"))
        v_ok = 0
        for path in valid:
            try:
                registry.validate(parse(path.read_bytes(), max_bytes=settings.max_message_bytes))
                v_ok += 1
            except HubError as exc:
                problems.append(f"{_rel(path)}: 应通过却被拒 should be valid: {exc.describe()}")
        i_ok = 0
        for path in invalid:
            expected = path.name.split("__", 1)[0]
            try:
                registry.validate(parse(path.read_bytes(), max_bytes=settings.max_message_bytes))
                problems.append(f"{_rel(path)}: 应被拒却通过 should be rejected with {expected}, but validates")
            except HubError as exc:
                if exc.code == expected:
                    i_ok += 1
                else:
                    problems.append(f"{_rel(path)}: expected {expected}, got {exc.describe()}")
        mark_v = OK if v_ok == len(valid) and valid else FAIL
        mark_i = OK if i_ok == len(invalid) and invalid else FAIL
        rows.append((svc.name, str(svc.version), f"{v_ok}/{len(valid)} {mark_v}", f"{i_ok}/{len(invalid)} {mark_i}"))
        totals = [totals[0] + v_ok, totals[1] + len(valid), totals[2] + i_ok, totals[3] + len(invalid)]
    head = ("服务 service", "版本", "有效样例通过 valid", "无效样例按预期代码拒收 invalid → expected code")
    widths = [max(_width(r[i]) for r in [*rows, head]) + 2 for i in range(3)]
    out("  " + "".join(_pad(h, w) for h, w in zip(head, widths, strict=False)) + head[3])
    for r in rows:
        out("  " + "".join(_pad(c, w) for c, w in zip(r, widths, strict=False)) + r[3])
    total = ("合计 total", "", f"{totals[0]}/{totals[1]}", f"{totals[2]}/{totals[3]}")
    out("  " + "".join(_pad(c, w) for c, w in zip(total, widths, strict=False)) + total[3])
    return problems


# ---------------------------------------------------------------------------------------------------- 3 installation


async def ensure_database(demo: Demo, *, recreate: bool) -> str:
    """Create the demo database when missing (or drop and create it when ``recreate``); returns what happened."""
    from hub.store.db import connection

    async with connection(demo.admin_dsn) as conn:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", demo.database)
        if exists and not recreate:
            return "reused"
        # The name was checked against _DB_NAME: safe to quote as an identifier.
        if exists:
            await conn.execute(f'DROP DATABASE "{demo.database}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{demo.database}"')
        return "recreated" if exists else "created"


async def _database_exists(demo: Demo) -> bool:
    from hub.store.db import connection

    async with connection(demo.admin_dsn) as conn:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", demo.database))


async def _installed_at(demo: Demo) -> Path | None:
    """The state directory recorded by the installation that owns the demo database (None when unknown)."""
    from hub.store.db import connection

    async with connection(demo.settings.pg_dsn) as conn:
        if not await conn.fetchval("SELECT to_regclass('hub_installation') IS NOT NULL"):
            return None
        where = await conn.fetchval("SELECT state_dir FROM hub_installation")
    return Path(where) if where else None


def _reset_pki(demo: Demo) -> None:
    """Forget the demo's CA, the systems' keys and the old database's evidence anchors (its own files only; RabbitMQ
    passwords stay valid)."""
    import shutil

    for sub in ("pki", "systems", "evidence"):
        shutil.rmtree(demo.state_dir / sub, ignore_errors=True)


async def install(demo: Demo) -> Any:
    """Database, migrations, CA, directory + RabbitMQ users. Returns the directory model.

    The database and the state dir belong together (the CA's register, the evidence signed by the hub's key):
    a new database with an old state dir gets a new PKI; an old demo database without its state dir (``make
    clean``) is recreated, since nothing could verify its signed evidence any more."""
    from hub.commands import trust_admin as admin
    from hub.directory.load import check_directory
    from hub.store.db import connection, migrate
    from hub.store.directory import DirectoryRepository
    from hub.transport import users
    from hub.trust import pki

    s = demo.settings
    s.state_dir.mkdir(parents=True, exist_ok=True)
    pki_dir = s.state_dir / "pki"
    orphaned = not pki.is_initialised(pki_dir) and await _database_exists(demo)
    if orphaned:
        owner = await _installed_at(demo)
        if owner is not None and owner != s.state_dir and pki.is_initialised(owner / "pki"):
            # Another demo on this machine (another clone, another state dir) lives in this database: never drop it.
            raise DemoFailed(
                f"数据库 {demo.database} 属于另一处安装的演示 the database belongs to a demo installed elsewhere "
                f"(state dir {owner}); choose your own: python -m hub.demo --database NAME --namespace NAME"
            )
    if orphaned and not demo.database.startswith(_DEMO_PREFIX):
        raise DemoFailed(
            f"数据库 {demo.database} 已存在，但状态目录 {_rel(s.state_dir)} 中没有它的证书中心 the database exists but "
            "the state dir has no CA for it: use the state dir it was made with, or drop the database"
        )
    what = await ensure_database(demo, recreate=orphaned)
    if what == "created" and pki.is_initialised(pki_dir):
        _reset_pki(demo)
        out(f"  {NOTE} 数据库是新建的，旧的演示证书作废重建 the database is new: the old demo PKI is replaced")
    if what == "recreated":
        import shutil

        shutil.rmtree(s.state_dir / "evidence", ignore_errors=True)  # anchors of the dropped database's chain
        out(f"  {NOTE} 状态目录是新的，旧演示数据库已重建 the state dir is new: the old demo database was recreated")
    applied = await migrate(s.pg_dsn)
    db_note = "已存在 reused" if what == "reused" else "新建 created"
    mig_note = f"{len(applied)} 个迁移已执行 migrations applied" if applied else "迁移已是最新 migrations up to date"
    out(f"  {OK} 数据库 database {demo.database}（{db_note}），{mig_note}")

    from hub.trust.lifecycle import check_installation

    try:
        async with connection(s.pg_dsn) as conn:
            await check_installation(s, conn, pki_dir)
    except HubError as exc:
        if exc.code != "STORE_FOREIGN_INSTALLATION":
            raise
        raise DemoFailed(
            f"数据库 {demo.database} 属于另一处安装的演示 the database belongs to a demo installed elsewhere — "
            f"{exc.detail}\n      choose your own: python -m hub.demo --database NAME --namespace NAME"
        ) from None
    if pki.is_initialised(pki_dir):
        await admin.refresh_crls_if_due(s, pki_dir)
        out(f"  {OK} 证书中心 CA：沿用 reused {_rel(pki_dir)}")
    else:
        await admin.init(s, pki_dir, agency=PROVINCE)
        out(f"  {OK} 证书中心 CA：为吉林省林业和草原局（{PROVINCE}）新建 created in {_rel(pki_dir)}")

    path = s.routes_dir / DIRECTORY_FILE
    directory, problems = check_directory(path)
    if directory is None:
        lines = "\n".join(f"      {p.file}:{p.line}: {p.code}: {p.message}" for p in problems[:10])
        raise DemoFailed(f"目录文件有误 the directory file has problems:\n{lines}")
    async with connection(s.pg_dsn) as conn:
        repo = DirectoryRepository(conn)
        current = await repo.current()
        if current is not None and current.source_sha256 == directory.sha256:
            version, how = current.version, "未变 unchanged"
        else:
            version, how = await repo.save(directory, source_xml=path.read_text(encoding="utf-8")), "已加载 loaded"
    wanted = [(sys_.id, None) for sys_ in directory.systems() if sys_.id != directory.hub_system]
    provisioned = await users.provision(s, wanted)
    agencies = sum(1 for _ in directory.agencies())
    systems = sum(1 for _ in directory.systems())
    groups = sum(1 for _ in directory.groups())
    out(
        f"  {OK} 目录 directory {how}（version {version}）：{agencies} 个机构 agencies，{systems} 个系统 systems，"
        f"{groups} 个命名群组 named groups；RabbitMQ 用户 users: {len(provisioned)}"
    )
    return directory


# ---------------------------------------------------------------------------------------------------- 4 the hub


def _proc_alive(pid: int) -> bool:
    """Alive and not a zombie (a reparented hub may linger as one where PID 1 does not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _is_demo_process(pid: int, command: bytes) -> bool:
    """The pid file could be stale and the number reused: only a ``hub.cli <command>`` process is ours to stop."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc: trust the pid file
    return b"hub.cli" in argv and command in argv


def _running(pid_file: Path, command: bytes) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _proc_alive(pid) and _is_demo_process(pid, command) else None


def running_hub(demo: Demo) -> int | None:
    return _running(demo.pid_file, b"run")


def _stop(pid_file: Path, command: bytes, timeout: float) -> int | None:
    pid = _running(pid_file, command)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _proc_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _proc_alive(pid):
        # It was started in its own session: its process group is exactly the process and its children.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return pid


def stop_hub(demo: Demo, timeout: float = 60.0) -> int | None:
    """Stop the demo hub (SIGTERM: workers finish what they hold, nothing is lost) and its ops page; returns the
    hub's pid, or None when none was running."""
    _stop(demo.ops_pid_file, b"ops", 10.0)
    return _stop(demo.pid_file, b"run", timeout)


def _ready_workers(log_file: Path) -> tuple[int, str | None]:
    """How many workers logged "ready", and the first error line a worker logged (if any)."""
    ready = 0
    error = None
    try:
        text = log_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0, None
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        msg = str(rec.get("msg", ""))
        if re.fullmatch(r"worker \d+ ready", msg):
            ready += 1
        elif rec.get("level") in ("error", "critical") and error is None:
            error = msg
    return ready, error


async def start_hub(demo: Demo) -> tuple[subprocess.Popen[bytes], float]:
    """``hub run`` in its own session (it outlives the demo), logging to the state dir; waits for its workers."""
    from hub.demo_scenario import gateway_idle_s

    started = time.monotonic()
    with open(demo.log_file, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hub.cli",
                "run",
                "--workers",
                str(demo.workers),
                "--gateway",
                "--gateway-port",
                str(demo.gateway_port),
                # no --gateway-examiners: the HTTPS submissions are examined in processes of their own beside the
                # gateway, one per core by default (docs/gateway.md, "More than one core")
            ],
            # The gateway lets an HTTPS system that stopped polling go after a few seconds, not two minutes: step l
            # shows it (hub.demo_scenario.GATEWAY_IDLE_S).
            env={**demo.env(), "HUB_GATEWAY_IDLE_S": f"{gateway_idle_s():.0f}"},
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    demo.pid_file.write_text(f"{proc.pid}\n")
    while True:
        ready, error = _ready_workers(demo.log_file)
        if ready >= demo.workers and _listening(demo.gateway_port):
            return proc, time.monotonic() - started
        if proc.poll() is not None or error is not None or time.monotonic() - started > READY_TIMEOUT_S:
            stop_hub(demo)
            tail = demo.log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
            why = error or (f"exited with {proc.returncode}" if proc.returncode is not None else "not ready in time")
            raise DemoFailed(
                f"枢纽未能启动 the hub did not start: {why}\n      日志 log {_rel(demo.log_file)}:\n"
                + "\n".join(f"        {ln[:200]}" for ln in tail)
            )
        await asyncio.sleep(0.1)


#: The ops page's demo accounts, one per role (三员分立 + duty): name, role, display name, password. Demo only: the
#: summary prints them; a real installation adds its operators with ``hub operators add NAME --role R``.
DEMO_OPERATORS: tuple[tuple[str, str, str, str], ...] = (
    ("zhao.admin", "admin", "系统管理员赵明", "demo-admin-2026"),
    ("li.security", "security", "保密员李岩", "demo-security-2026"),
    ("sun.auditor", "auditor", "审计员孙丽", "demo-auditor-2026"),
    ("wang.duty", "duty", "值班员王强", "demo-duty-2026"),
)


async def ensure_operators(pool: Any) -> int:
    """The demo accounts that are missing (a re-run keeps the earlier ones, unlocked); returns how many were added."""
    from hub.store import operators

    added = 0
    for name, role, display, password in DEMO_OPERATORS:
        op = await operators.get_operator(pool, name)
        if op is None:
            await operators.add_operator(
                pool,
                name,
                role=role,
                display_name=display,
                password=password,
                by="make-demo",
                by_role="console",
                via="cli",
                reason="演示账户 demo account",
            )
            added += 1
        elif op.failed_logins or op.locked_until is not None:
            await operators.unlock(
                pool, name, by="make-demo", by_role="console", via="cli", reason="演示重新开始 demo re-run"
            )
    return added


async def start_ops_page(demo: Demo) -> tuple[int, float]:
    """``hub ops`` in its own session beside the hub (its server certificate issued by the hub CA when missing);
    waits until it serves. Returns its pid and how long that took."""
    from monitoring.server import default_cert_paths

    started = time.monotonic()
    cert, _ = default_cert_paths(demo.settings)
    if not cert.exists():
        argv = ["pki", "issue-server", "--host", "127.0.0.1", "--host", "localhost", "--out-dir", str(cert.parent)]
        rc, text = await _run_cli(demo, argv)
        if rc != 0:
            raise DemoFailed(f"hub pki issue-server (ops page) exited {rc}: {text.strip()[-300:]}")
    with open(demo.ops_log_file, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "ops", "--port", str(demo.ops_port)],
            env=demo.env(),
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    demo.ops_pid_file.write_text(f"{proc.pid}\n")
    while not _listening(demo.ops_port):
        if proc.poll() is not None or time.monotonic() - started > READY_TIMEOUT_S:
            _stop(demo.ops_pid_file, b"ops", 5.0)
            tail = demo.ops_log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
            raise DemoFailed(
                "运维监控页面未能启动 the ops page did not start:\n" + "\n".join(f"        {ln[:200]}" for ln in tail)
            )
        await asyncio.sleep(0.1)
    return proc.pid, time.monotonic() - started


def _listening(port: int) -> bool:
    """Does something accept TCP connections on 127.0.0.1:``port`` (the gateway, once it serves)."""
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------------------------------------------- 6 summary

_MSG_STATES = {
    "accepted": "已受理",
    "rejected": "已拒收",
    "quarantined": "隔离中",
    "released": "已放行",
    "quarantine_rejected": "审核驳回",
}
_DELIVERY_STATES = {
    "delivered": "已送达",
    "blocked": "已拦截",
    "pending": "待送达",
    "failed": "失败",
    "received": "已签收",
    "read": "已阅",
    "handled": "已办结",
    "feedback": "已反馈",
}


async def summary(demo: Demo, pool: Any, *, inbox: str, waiting: int) -> None:
    async with pool.acquire() as conn:
        msgs = await conn.fetch("SELECT state, count(*) AS n FROM messages GROUP BY state ORDER BY n DESC")
        dels = await conn.fetch("SELECT state, count(*) AS n FROM deliveries GROUP BY state ORDER BY n DESC")
        evidence = await conn.fetchval("SELECT count(*) FROM evidence")
        checkpoints = await conn.fetchval("SELECT count(*) FROM evidence WHERE kind = 'checkpoint'")
        refused = await conn.fetchval("SELECT count(*) FROM intake_rejections")
        receipts = await conn.fetch("SELECT kind, count(*) AS n FROM receipts GROUP BY kind ORDER BY kind")
        # What the process engine sent (hub-signed, through the pipeline like any message) and what needs a person.
        hub_system = await conn.fetchval("SELECT hub_system FROM directory_versions ORDER BY version DESC LIMIT 1")
        process_msgs = await conn.fetchval("SELECT count(*) FROM messages WHERE sender_system = $1", hub_system)
        process_dels = await conn.fetchval(
            "SELECT count(*) FROM deliveries d JOIN messages m USING (message_id) WHERE m.sender_system = $1",
            hub_system,
        )
        alarms = await conn.fetchval("SELECT count(*) FROM process_alarms WHERE cleared_at IS NULL")

    def fmt(rows: Sequence[Any], names: dict[str, str]) -> str:
        return " · ".join(f"{names.get(r['state'], r['state'])} {r['state']} {r['n']}" for r in rows) or "—"

    out("  PostgreSQL 中的记录（本库历次演示累计）records in PostgreSQL (all demo runs in this database):")
    out(f"    报文 messages      {fmt(msgs, _MSG_STATES)}")
    out(f"    投递 deliveries    {fmt(dels, _DELIVERY_STATES)}")
    out("    回执 answers       " + (" · ".join(f"{r['kind']} {r['n']}" for r in receipts) or "—"))
    out(f"    验签前拒收 refused before the signature could be trusted: {refused}")
    out(
        f"    流程 processes     枢纽发出的流程报文 {process_msgs} 条（投递 {process_dels} 次），"
        f"未解除告警 {alarms} 条 hub-sent process messages {process_msgs} (deliveries {process_dels}), "
        f"open alarms {alarms}"
    )
    out(f"    证据链 evidence    {evidence} 条记录 records，{checkpoints} 个签名检查点 signed checkpoints")
    s = demo.settings
    out("  位置 where things are:")
    out(f"    数据库 database    {demo.database}  ({s.pg_dsn})")
    out(f"    命名空间 namespace {s.namespace}  (RabbitMQ exchanges, queues and users {s.namespace}.*)")
    out(
        f"    状态目录 state dir {_rel(s.state_dir)}  (pki/ 证书中心 CA, systems/ 各系统密钥与证书 keys and "
        "certificates, amqp-users/ RabbitMQ 口令 passwords)"
    )
    hub_cmd = _rel(Path(sys.executable).parent / "hub")
    out("  四处看看 look around (先执行 first run the export line):")
    out(f"    {demo.export_line()}")
    cmds = [
        ("directory list", "目录：机构、系统、群组 agencies, systems, groups"),
        ("quarantine list --all", "隔离审核记录 quarantine decisions"),
        (f"receive --system {inbox}", f"长春市林业局办公系统收件箱：{waiting} 条待读 its inbox, {waiting} waiting"),
        ("evidence verify", "校验证据链 check the evidence chain"),
        ("adapter new my_oa --system county-220182-oa --dir /tmp", "用 SDK 生成适配器 scaffold an SDK adapter"),
    ]

    width = max(len(c) for c, _ in cmds) + len(hub_cmd) + 3
    for cmd, what in cmds:
        out(f"    {(hub_cmd + ' ' + cmd).ljust(width)}# {what}")
    if running_hub(demo) is not None:
        ca = _rel(s.state_dir / "pki" / "root-ca.pem")
        out(f"    curl --cacert {ca} {demo.gateway_url}/openapi.json  # HTTPS 网关 gateway (docs/gateway.md)")
    out(
        f"    适配器 adapters     {_rel(s.state_dir / 'adapters')}/<系统>/ 入网目录 enrolment directories; "
        "SDK 指南 guide: docs/adapter-guide.md"
    )
    if _running(demo.ops_pid_file, b"ops") is not None:
        root = _rel(s.state_dir / "pki" / "root-ca.pem")
        out(f"  运维监控页面 the ops page: {demo.ops_url}  (浏览器信任枢纽根证书 trust the hub root: {root})")
        for name, role, display, password in DEMO_OPERATORS:
            out(f"    {display:<10} {role:<9} 账户 login {name:<12} 口令 password {password}")
    out(
        "    机构适配器 agency adapters (steps n–r): 各步结束即停止 stopped after their steps; 模拟外部系统的文件 "
        f"their simulated systems' files: {_rel(s.state_dir / 'adapters')}/<package>/"
    )


# ---------------------------------------------------------------------------------------------------- wiring


async def _run_cli(demo: Demo, argv: Sequence[str]) -> tuple[int, str]:
    """A ``hub`` command as an operator would type it, against this installation."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub.cli",
        *argv,
        env=demo.env(),
        cwd=PROJECT_ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    data, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, data.decode("utf-8", errors="replace")


def _stage(n: int, title: str) -> None:
    out()
    out(f"[{n}/6] {title}")


async def run(demo: Demo, *, stop_at_end: bool) -> int:
    from hub.demo_scenario import KEEP_FOR_OPERATOR, Scenario
    from hub.store.db import create_pool

    failed: list[str] = []
    began = time.monotonic()
    out("林业政务交换枢纽 演示 · Forestry Exchange Hub demo")

    _stage(1, "检查服务 checking the services")
    missing = await check_services(demo)
    if missing:
        for m in missing:
            out(f"  {FAIL} {m}")
        out(f"  {FAIL} 缺少服务，演示无法继续 a service is missing: the demo cannot continue")
        return 2

    _stage(2, "校验全部样例报文 validating every sample message (issue 2)")
    problems = check_samples(demo.settings)
    for p in problems:
        out(f"  {FAIL} {p}")
    if problems:
        failed.append("samples")

    _stage(
        3,
        f"演示环境 the demo installation (database {demo.database}, namespace {demo.settings.namespace}, "
        f"state {_rel(demo.state_dir)})",
    )
    old = stop_hub(demo)
    if old is not None:
        out(f"  {NOTE} 已停止上次演示的枢纽 stopped the hub of an earlier run (pid {old})")
    directory = await install(demo)
    pool = await create_pool(demo.settings.pg_dsn, min_size=1, max_size=3)
    proc: subprocess.Popen[bytes] | None = None
    scenario = Scenario(
        demo.settings,
        directory=directory,
        pool=pool,
        run_cli=lambda argv: _run_cli(demo, argv),
        hub_alive=lambda: running_hub(demo) is not None,
        out=out,
        hub_log=demo.log_file,
        workers=demo.workers,
        gateway_url=demo.gateway_url,
        ops_url=demo.ops_url,
        operators={role: (name, password) for name, role, _, password in DEMO_OPERATORS},
    )
    try:
        new, total = await scenario.enroll_all()
        out(
            f"  {OK} 接入系统密钥与证书 keys and certificates of the scenario's systems: {total} "
            f"（新签发 newly issued {new}，沿用 kept {total - new}）"
        )

        _stage(4, f"启动枢纽 starting the hub (hub run --workers {demo.workers} --gateway)")
        from hub.trust.pki import PkiPaths

        if not PkiPaths(demo.state_dir / "pki").gateway_cert.exists():
            rc, text = await _run_cli(demo, ["pki", "issue-server", "--host", "127.0.0.1", "--host", "localhost"])
            if rc != 0:
                raise DemoFailed(f"hub pki issue-server exited {rc}: {text.strip()[-300:]}")
            out(f"  {OK} HTTPS 网关服务器证书 the gateway's server certificate (127.0.0.1, localhost), by the hub CA")
        proc, took = await start_hub(demo)
        out(
            f"  {OK} 枢纽已启动 the hub is running: pid {proc.pid}，{demo.workers} 个工作进程就绪 workers ready "
            f"in {took:.1f} s (log {_rel(demo.log_file)})；HTTPS 网关 gateway {demo.gateway_url}"
        )
        from hub.gateway.config import GatewaySettings

        want = GatewaySettings.auto_examiners() if not os.environ.get("HUB_GATEWAY_EXAMINERS", "").strip() else None
        pids = re.findall(r"gateway examiner \d+ running \(pid (\d+)\)", demo.log_file.read_text(errors="replace"))
        if want is not None and len(pids) != want:
            raise DemoFailed(
                f"the gateway listens but {len(pids)} of its {want} examiner processes (one per core) said they run "
                "(see the hub's log)"
            )
        where = f"pid {', '.join(pids)}" if pids else "none: examined in the gateway process (one core)"
        out(f"  {OK} 网关审验进程 the gateway's examiner processes (one per core by default): {where}")
        added = await ensure_operators(pool)
        ops_pid, took = await start_ops_page(demo)
        out(
            f"  {OK} 运维监控页面 the ops page is serving: {demo.ops_url} (pid {ops_pid}, {took:.1f} s; "
            f"log {_rel(demo.ops_log_file)})；演示账户 demo accounts: {len(DEMO_OPERATORS)} (新建 new {added})"
        )
        leftovers = await scenario.clear_queues()
        if leftovers:
            out(
                f"  {NOTE} 清理了上次运行遗留的 {leftovers} 条消息 cleared {leftovers} message(s) left by an earlier "
                "run"
            )

        _stage(5, "演示场景 the scenario (each system signs as itself; recipients verify the hub's signature)")
        outcomes = await scenario.run()
        # Name a failed step as the scenario printed it ("k 证据链 evidence chain"), not by its key alone.
        failed += [f"{o.key} {o.title}" for o in outcomes if not o.ok]
        kept = await scenario.mail.collect(KEEP_FOR_OPERATOR, lambda g: True, expect=None, keep=True)

        _stage(6, "小结 summary")
        await summary(demo, pool, inbox=KEEP_FOR_OPERATOR, waiting=len(kept))
    finally:
        await scenario.close()
        await pool.close()
        if stop_at_end and proc is not None:
            stop_hub(demo)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    out()
    if stop_at_end:
        out(f"  {OK} 枢纽已停止 the hub was stopped (--stop)")
    elif proc is not None:
        out(
            f"  {NOTE} 枢纽在后台继续运行 the hub keeps running in the background: pid {proc.pid}, "
            f"log {_rel(demo.log_file)}"
        )
        stop_cmd = f"{_rel(Path(sys.executable))} -m hub.demo --stop-only"
        if demo.state_dir != DEFAULT_STATE_DIR:
            stop_cmd += f" --state-dir {shlex.quote(str(demo.state_dir))}"
        out(f"    停止 stop it: make demo-stop  (或 or: {stop_cmd})")
    elapsed = time.monotonic() - began
    if failed:
        out(f"{FAIL} 演示中有步骤未按预期 some steps did not behave as expected: {', '.join(failed)} ({elapsed:.0f} s)")
        return 1
    out(f"{OK} 演示完成，全部步骤符合预期 the demo is complete and every step behaved as expected ({elapsed:.0f} s)")
    return 0


def _setup_logging(demo: Demo) -> None:
    """The demo's own library logs (reconnect notices and the like) go to a file, not between the demo's lines."""
    from hub.logs import JsonFormatter

    demo.state_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(demo.state_dir / "demo.log", mode="w", encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hub.demo", description="林业政务交换枢纽演示 the Forestry Exchange Hub demo"
    )
    p.add_argument("--namespace", default=DEFAULT_NAMESPACE, help=f"RabbitMQ namespace (default {DEFAULT_NAMESPACE})")
    p.add_argument("--database", default=DEFAULT_DATABASE, help=f"PostgreSQL database (default {DEFAULT_DATABASE})")
    p.add_argument(
        "--state-dir",
        default=str(DEFAULT_STATE_DIR),
        help=f"CA, keys, passwords, pid and logs (default {_rel(DEFAULT_STATE_DIR)})",
    )
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="hub worker processes (default 2)")
    p.add_argument("--stop", action="store_true", help="stop the hub when the demo ends")
    p.add_argument("--stop-only", action="store_true", help="only stop a demo hub left running, then exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        demo = make_demo(args)
        if args.stop_only:
            pid = stop_hub(demo)
            out(
                f"{OK} 演示枢纽已停止 the demo hub was stopped (pid {pid})"
                if pid is not None
                else f"{NOTE} 没有正在运行的演示枢纽 no demo hub is running ({_rel(demo.pid_file)})"
            )
            return 0
        _setup_logging(demo)
        return asyncio.run(run(demo, stop_at_end=args.stop))
    except DemoFailed as exc:
        out(f"  {FAIL} {exc}")
        return 2
    except HubError as exc:
        out(f"  {FAIL} {exc.describe()}")
        if exc.code in ("DELIVERY_STORE", "DELIVERY_BROKER"):
            out("      服务中断了吗 did a service stop? make services")
        return 2
    except KeyboardInterrupt:
        out(f"\n{NOTE} 已中断 interrupted")
        return 130
    except Exception as exc:  # the operator never sees a traceback; the details are in the demo log
        logging.getLogger("hub.demo").exception("demo failed")
        out(f"  {FAIL} INTERNAL: {title_of('INTERNAL')} — {type(exc).__name__}: {str(exc)[:200]}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
