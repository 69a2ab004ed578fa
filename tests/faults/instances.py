"""RabbitMQ nodes and a PostgreSQL instance of the fault tests' own: own ports, node names and data directories
under a temporary folder. The machine's shared services (RabbitMQ on 5672, PostgreSQL on 5432) are never touched:
every command here names its own node (``rabbitmqctl -n``) or data directory (``pg_ctl -D``).

- ``RabbitNode``: ``rabbitmq-server`` in the foreground with ``RABBITMQ_NODENAME``, ``RABBITMQ_NODE_PORT``,
  ``RABBITMQ_DIST_PORT``, ``RABBITMQ_MNESIA_BASE``, ``RABBITMQ_LOG_BASE``, a ``rabbitmq.conf`` of its own (AMQP and
  management port, the hub's max_message_size) and its own Erlang cookie (``HOME`` is the node's folder, so the
  node and its ``rabbitmqctl`` share a cookie the shared node does not know). ``stop()`` stops the node gracefully
  (``rabbitmqctl stop``), ``kill()`` with SIGKILL; ``start()`` again boots it on the same data directory, so durable
  queues and persistent messages come back. ``join(first)`` clusters a node with another one.
- ``PgInstance``: ``initdb`` + ``pg_ctl`` as the ``postgres`` user on a port of its own, trust authentication on
  127.0.0.1; ``stop()`` (fast shutdown) and ``start()`` again on the same data directory.

All of it runs as root on this machine (PostgreSQL's processes as ``postgres``)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

RABBIT_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        try:
            s.connect((host, port))
        except OSError:
            return False
        return True


def _wait(what: str, ready: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready within {timeout:.0f} s")


class RabbitNode:
    """One RabbitMQ node of our own (``name@localhost``)."""

    def __init__(self, base: Path, name: str, *, cookie: str = "hubfaultcookie") -> None:
        self.base = base / name
        self.name = name
        self.node = f"{name}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.mgmt_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.base.mkdir(parents=True, exist_ok=True)
        cookie_file = self.base / ".erlang.cookie"
        cookie_file.write_text(cookie)
        cookie_file.chmod(0o400)
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            f"management.tcp.port = {self.mgmt_port}\n"
            "management.tcp.ip = 127.0.0.1\n"
            "max_message_size = 8388608\n"
            "disk_free_limit.absolute = 10MB\n"
            "vm_memory_high_watermark.relative = 0.6\n"
            "log.console = false\n"
            "log.file.level = warning\n"
        )
        (self.base / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "advanced.config").write_text("[].\n")

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def management_url(self) -> str:
        return f"http://guest:guest@127.0.0.1:{self.mgmt_port}/"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.base),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self.base / "node.pid"),
            RABBITMQ_PLUGINS_EXPAND_DIR=str(self.base / "plugins-expand"),
            RABBITMQ_FEATURE_FLAGS_FILE=str(self.base / "feature_flags"),
            RABBITMQ_QUORUM_DIR=str(self.base / "mnesia" / self.node / "quorum"),
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def ctl(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(RABBIT_SCRIPTS / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.node}: {done.stdout}{done.stderr}")
        return done

    def start(self, *, wait: bool = True, timeout: float = 120) -> None:
        """Boot the node (foreground process of ours) and wait until it takes AMQP connections."""
        if self.proc is not None and self.proc.poll() is None:
            return
        (self.base / "log").mkdir(exist_ok=True)
        with open(self.base / "server.out", "ab") as out:
            self.proc = subprocess.Popen(
                [str(RABBIT_SCRIPTS / "rabbitmq-server")],
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 120) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.node} exited with {self.proc.returncode}: {self.tail()}")
            return port_open(self.port)

        _wait(f"RabbitMQ node {self.node}", ready, timeout)
        self.ctl("await_startup", timeout=timeout)

    def tail(self, n: int = 2000) -> str:
        try:
            return (self.base / "server.out").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 120) -> None:
        """Stop the node gracefully (``rabbitmqctl stop``) and wait for its process to end."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        with contextlib.suppress(subprocess.TimeoutExpired, RuntimeError):
            self.ctl("stop", timeout=timeout, check=False)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the node's whole process group (the shell script, beam, its port programs)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        self.proc = None

    def join(self, first: RabbitNode) -> None:
        """Make this (running, empty) node a member of ``first``'s cluster."""
        self.ctl("stop_app")
        self.ctl("reset")
        self.ctl("join_cluster", first.node)
        self.ctl("start_app", timeout=120)
        self.ctl("await_startup", timeout=120)

    def destroy(self) -> None:
        self.kill() if self.proc is not None else None
        shutil.rmtree(self.base, ignore_errors=True)


class PgInstance:
    """A PostgreSQL 15 cluster of our own: ``initdb`` + ``pg_ctl`` as the postgres user, on its own port."""

    def __init__(self, base: Path, *, port: int | None = None) -> None:
        self.base = base
        self.data = base / "pgdata"
        self.port = port or free_port()
        self.log = base / "postgres.log"
        base.mkdir(parents=True, exist_ok=True)
        pg = pwd.getpwnam("postgres")
        self._uid, self._gid = pg.pw_uid, pg.pw_gid
        os.chown(base, self._uid, self._gid)
        # The parent folders must let the postgres user reach its data directory.
        for parent in base.parents:
            if str(parent) in ("/", "/tmp"):
                break
            with contextlib.suppress(OSError):
                parent.chmod(parent.stat().st_mode | 0o011)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _as_postgres(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        def demote() -> None:
            os.setgid(self._gid)
            os.setuid(self._uid)

        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["HOME"] = str(self.base)
        done = subprocess.run(
            list(cmd), env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=demote, cwd=self.base
        )
        return done

    def init(self) -> None:
        done = self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb: {done.stdout}{done.stderr}")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.base}'\n"
                "max_connections = 100\nshared_buffers = 64MB\nfsync = on\nsynchronous_commit = on\n"
                "logging_collector = off\n"
            )

    def start(self, timeout: float = 60) -> None:
        done = self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(int(timeout)), "start"
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start: {done.stdout}{done.stderr}{self.tail()}")

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        done = self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", str(int(timeout)), "stop"
        )
        if done.returncode != 0 and "Is server running?" not in done.stderr:
            raise RuntimeError(f"pg_ctl stop: {done.stdout}{done.stderr}")

    def running(self) -> bool:
        done = self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status")
        return done.returncode == 0

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = self._as_postgres(
            "/usr/bin/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
            "-v", "ON_ERROR_STOP=1", "-Atc", sql,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"psql: {done.stderr}")
        return done.stdout

    def destroy(self) -> None:
        if self.running():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


__all__ = ["PgInstance", "RabbitNode", "free_port", "port_open"]
