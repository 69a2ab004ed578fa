"""``hub backup --out FILE`` and ``hub restore FILE``: one encrypted file with everything an installation is — the
store (``pg_dump``, one consistent snapshot, taken while the hub runs) and the state directory (the CA, the hub's
keys, the systems' credentials) — and its restoration onto an empty database and an empty state directory.

File format (version 1)::

    b"FXHUB-BACKUP\\x001\\n" ‖ salt (16) ‖ nonce prefix (8) ‖ chunks
    chunk = length (4, big-endian, of the ciphertext) ‖ AES-256-GCM(key, nonce = prefix ‖ index (4), plaintext,
            aad = header ‖ index (4) ‖ last-flag (1))

The key is scrypt(passphrase, salt, n=2**15, r=8, p=1). The plaintext is a tar with ``manifest.json``,
``store.dump`` (``pg_dump -Fc``) and ``state/…``. A changed, truncated, reordered or appended chunk, or a wrong
passphrase, fails authentication: nothing is restored from a file that does not decrypt entirely.

The passphrase comes from an environment variable (``--passphrase-env``, default ``HUB_BACKUP_PASSPHRASE``), never
from the command line. ``pg_dump`` and ``pg_restore`` come with PostgreSQL's client (Debian: postgresql-client).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from hub.errors import ConfigError
from hub.settings import Settings

__all__ = ["backup", "register", "restore"]

MAGIC = b"FXHUB-BACKUP\x001\n"
CHUNK = 1 << 20
_SKIP = {"hub.pid", "hub.log", "demo.log", "ops.pid", "ops.log"}  # what a running installation writes that is not state
#: Folders of the state dir that hold no state: the workers' live metrics (emptied by every ``hub run``).
_SKIP_DIRS = {"metrics"}


def _fail(text: str) -> ConfigError:
    return ConfigError(text, code="BACKUP_FAILED")


def _key(passphrase: bytes, salt: bytes) -> bytes:
    if len(passphrase) < 8:
        raise _fail("the backup passphrase must have at least 8 characters")
    return Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase)


def _encrypt(plain: BinaryIO, out: BinaryIO, passphrase: bytes) -> None:
    salt, prefix = os.urandom(16), os.urandom(8)
    header = MAGIC + salt + prefix
    aead = AESGCM(_key(passphrase, salt))
    out.write(header)
    index = 0
    block = plain.read(CHUNK)
    while True:
        following = plain.read(CHUNK)
        last = not following
        idx = struct.pack(">I", index)
        sealed = aead.encrypt(prefix + idx, block, header + idx + (b"\x01" if last else b"\x00"))
        out.write(struct.pack(">I", len(sealed)) + sealed)
        if last:
            return
        block, index = following, index + 1


def _decrypt(data: BinaryIO, out: BinaryIO, passphrase: bytes) -> None:
    head = data.read(len(MAGIC) + 24)
    if len(head) != len(MAGIC) + 24 or not head.startswith(MAGIC):
        raise _fail("the file is not a hub backup (hub backup --out)")
    salt, prefix = head[len(MAGIC) : len(MAGIC) + 16], head[len(MAGIC) + 16 :]
    aead = AESGCM(_key(passphrase, salt))
    index = 0
    while True:
        size = data.read(4)
        if len(size) != 4:
            raise _fail("the backup file is truncated (its last part is missing)")
        length = struct.unpack(">I", size)[0]
        sealed = data.read(length)
        if len(sealed) != length:
            raise _fail("the backup does not decrypt: the file was changed or truncated")
        idx = struct.pack(">I", index)
        for flag in (b"\x00", b"\x01"):
            try:
                block = aead.decrypt(prefix + idx, sealed, head + idx + flag)
            except InvalidTag:
                continue
            out.write(block)
            if flag == b"\x01":
                if data.read(1):
                    raise _fail("the backup file has data after its last part")
                return
            break
        else:
            raise _fail("the backup does not decrypt: wrong passphrase, or the file was changed")
        index += 1


def _passphrase(var: str) -> bytes:
    value = os.environ.get(var)
    if not value:
        raise _fail(f"set the backup passphrase in the environment variable {var} (it is never read from arguments)")
    return value.encode()


def _libpq(dsn: str) -> tuple[str, dict[str, str]]:
    """``dsn`` without its password (for ``--dbname``) and the environment of the child with the password as
    ``PGPASSWORD``: a command line is readable by every local user (``/proc/<pid>/cmdline``, ``ps``), a process's
    environment only by its owner. Host, port, user, database and every other parameter (sslmode, …) stay in the
    DSN as they were; a DSN that is not a URL is passed unchanged."""
    env = dict(os.environ)
    m = re.match(r"(?s)(postgres(?:ql)?://)([^/?#]*)(.*)", dsn)
    if m is None:
        return dsn, env
    scheme, netloc, rest = m.groups()
    password: str | None = None
    if "@" in netloc:
        userinfo, hosts = netloc.rsplit("@", 1)
        user, colon, secret = userinfo.partition(":")
        if colon:
            password = urllib.parse.unquote(secret)
            netloc = f"{user}@{hosts}" if user else hosts
    path, question, query = rest.partition("?")
    if question:
        fragment = ""
        if "#" in query:
            query, fragment = query.split("#", 1)
            fragment = "#" + fragment
        kept = []
        for item in query.split("&"):
            name, _, value = item.partition("=")
            if urllib.parse.unquote_plus(name) == "password":
                password = urllib.parse.unquote_plus(value)
            else:
                kept.append(item)
        rest = path + ("?" + "&".join(kept) if kept else "") + fragment
    if password is not None:
        env["PGPASSWORD"] = password
    return scheme + netloc + rest, env


def _database_name(dsn: str) -> str:
    """The database a DSN names, without its query (which may carry ``password=``): what backup and restore print."""
    return dsn.rsplit("/", 1)[-1].split("?", 1)[0].split("#", 1)[0]


def _admin_dsn(dsn: str) -> str:
    """``dsn`` pointed at the ``postgres`` database, its query (password, sslmode, …) kept."""
    head, _, tail = dsn.rpartition("/")
    _, question, query = tail.partition("?")
    return f"{head}/postgres" + (question + query if question else "")


def _run(argv: list[str], what: str, *, env: dict[str, str] | None = None) -> None:
    tool = shutil.which(argv[0])
    if tool is None:
        raise _fail(f"{argv[0]} is not installed (Debian: apt-get install postgresql-client)")
    done = subprocess.run([tool, *argv[1:]], capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        detail = " ".join(done.stderr.split())[:300]
        raise _fail(f"{what} failed ({argv[0]} exit {done.returncode}): {detail}")


def _state_files(state_dir: Path, skip: Path | None) -> Iterator[Path]:
    for path in sorted(state_dir.rglob("*")):
        if path.relative_to(state_dir).parts[0] in _SKIP_DIRS:
            continue
        if path.is_file() and path.name not in _SKIP and (skip is None or path.resolve() != skip.resolve()):
            yield path


async def _identity(settings: Settings) -> dict[str, Any]:
    from hub.store.db import connection
    from hub.trust.lifecycle import check_installation

    async with connection(settings.pg_dsn) as conn:
        await check_installation(settings, conn)
        row = await conn.fetchrow("SELECT root_fingerprint, namespace FROM hub_installation")
    return dict(row) if row is not None else {}


def backup(settings: Settings, out: Path, passphrase: bytes) -> dict[str, Any]:
    """Write the encrypted backup of this installation to ``out``; returns its manifest."""
    state = Path(settings.state_dir)
    if not (state / "pki" / "root-ca.pem").is_file():
        raise _fail(f"{state} holds no hub installation (no pki/root-ca.pem)")
    identity = asyncio.run(_identity(settings))
    _key(passphrase, b"0" * 16)  # refuse a short passphrase before any work
    with tempfile.TemporaryDirectory(prefix="hub-backup-") as tmp:
        dump = Path(tmp) / "store.dump"
        # The evidence anchors as they are before the dump begins: every checkpoint they name is then in the dump
        # (an anchor is written once its checkpoint committed), and a restored store verifies against them.
        from hub.store.anchors import ANCHORS

        anchors = state / ANCHORS
        # (No file yet is an empty one: a file made while the dump runs would name checkpoints the dump lacks.)
        anchored = anchors.read_bytes() if anchors.is_file() else b""
        dbname, env = _libpq(settings.pg_dsn)
        _run(
            ["pg_dump", "-Fc", "--no-owner", "--no-privileges", f"--dbname={dbname}", "-f", str(dump)],
            "pg_dump",
            env=env,
        )
        manifest = {
            "format": 1,
            "made_at": dt.datetime.now(dt.UTC).isoformat(),
            "root_fingerprint": identity.get("root_fingerprint"),
            "namespace": settings.namespace,
            "database": _database_name(settings.pg_dsn),
            "store_sha256": hashlib.sha256(dump.read_bytes()).hexdigest(),
        }
        plain = Path(tmp) / "backup.tar"
        files = 0
        with tarfile.open(plain, "w") as tar:
            data = json.dumps(manifest, indent=1).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            tar.add(dump, "store.dump")
            for path in _state_files(state, out):
                name = "state/" + path.relative_to(state).as_posix()
                if path == anchors:
                    info = tar.gettarinfo(path, name)
                    info.size = len(anchored)
                    tar.addfile(info, io.BytesIO(anchored))
                else:
                    tar.add(path, name, recursive=False)
                files += 1
        manifest["state_files"] = files
        from hub.trust.keys import is_special

        if is_special(out):
            # A device or FIFO (/dev/null, a pipe to another machine): written into, never renamed over.
            with plain.open("rb") as src, open(out, "wb") as dst:
                _encrypt(src, dst, passphrase)
            return manifest
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with plain.open("rb") as src, os.fdopen(fd, "wb") as dst:
            _encrypt(src, dst, passphrase)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(partial, out)
    return manifest


async def _empty_database(settings: Settings) -> None:
    """Create the target database when it does not exist; refuse one that holds anything."""
    import asyncpg

    from hub.store.db import connection

    name = _database_name(settings.pg_dsn)
    try:
        async with connection(settings.pg_dsn) as conn:
            used = await conn.fetchval(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S', 'v')"
            )
    except ConfigError as exc:
        if exc.code != "STORE_NO_DATABASE":
            raise
        admin = _admin_dsn(settings.pg_dsn)
        if not name.replace("_", "").isalnum():
            raise _fail(f"create the database {name!r} first (createdb), then restore into it") from None
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return
    if used:
        raise _fail(
            f"the database {name!r} is not empty ({used} tables): restore only into an empty database "
            "(createdb a new one and point HUB_PG_DSN at it)"
        )


async def _moved_to(settings: Settings) -> None:
    """The restored store's installation now lives in this state directory (what its messages name)."""
    from hub.store.db import connection

    async with connection(settings.pg_dsn) as conn:
        if await conn.fetchval("SELECT to_regclass('hub_installation') IS NOT NULL"):
            await conn.execute("UPDATE hub_installation SET state_dir = $1", str(settings.state_dir))


def restore(settings: Settings, source: Path, passphrase: bytes) -> dict[str, Any]:
    """Restore a backup onto an empty database (created when missing) and an empty state directory."""
    state = Path(settings.state_dir)
    if state.exists() and any(state.iterdir()):
        raise _fail(f"the state directory {state} is not empty: restore into a new, empty one (HUB_STATE_DIR)")
    with tempfile.TemporaryDirectory(prefix="hub-restore-") as tmp:
        plain = Path(tmp) / "backup.tar"
        try:
            with source.open("rb") as src, plain.open("wb") as dst:
                _decrypt(src, dst, passphrase)
        except OSError as exc:
            raise _fail(f"cannot read {source}: {exc.strerror or type(exc).__name__}") from None
        with tarfile.open(plain) as tar:
            member = tar.extractfile("manifest.json")
            if member is None:
                raise _fail("the backup has no manifest")
            manifest = json.loads(member.read())
            tar.extractall(Path(tmp) / "x", filter="data")
        dump = Path(tmp) / "x" / "store.dump"
        if hashlib.sha256(dump.read_bytes()).hexdigest() != manifest.get("store_sha256"):
            raise _fail("the store dump inside the backup does not match its manifest")
        if manifest.get("namespace") != settings.namespace:
            raise _fail(
                f"the backup is of the installation with namespace {manifest.get('namespace')!r}; set HUB_NAMESPACE "
                "to it (the restored store records it as its installation)"
            )
        asyncio.run(_empty_database(settings))
        dbname, env = _libpq(settings.pg_dsn)
        _run(
            ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", f"--dbname={dbname}", str(dump)],
            "pg_restore",
            env=env,
        )
        asyncio.run(_moved_to(settings))
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        state.chmod(0o700)  # as `hub pki init` and the hub make it: the CA, the keys, the broker passwords
        source_state = Path(tmp) / "x" / "state"
        if source_state.is_dir():
            for item in source_state.iterdir():
                shutil.move(str(item), state / item.name)
        _private_dirs(state)
    return manifest


#: Folders of the state dir that hold secrets (keys, passwords, credentials): 0700 whatever the umask.
_SECRET_DIRS = ("pki", "pki/hub", "pki/gateway", "systems", "amqp-users")


def _private_dirs(state: Path) -> None:
    """The backup holds files, not folders: give the restored folders that hold secrets mode 0700 again — the known
    ones and any folder with a private (0600) file in it."""
    dirs = {state / d for d in _SECRET_DIRS}
    for path in state.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o077 == 0:
            dirs.add(path.parent)
    for d in dirs:
        if d.is_dir() and not d.is_symlink():
            d.chmod(0o700)


# ------------------------------------------------------------------------------------------------ the commands


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    out = Path(args.out)
    manifest = backup(settings, out, _passphrase(args.passphrase_env))
    print(
        f"backup written: {out} ({out.stat().st_size} bytes, encrypted): store {manifest['database']} "
        f"+ {manifest['state_files']} files of {settings.state_dir}"
    )
    print(f"restore it with: {args.passphrase_env}=… hub restore {out}  (onto an empty database and state dir)")
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    manifest = restore(settings, Path(args.file), _passphrase(args.passphrase_env))
    print(
        f"restored the backup of {manifest['made_at']} (root CA {str(manifest.get('root_fingerprint'))[:16]}…, "
        f"namespace {manifest['namespace']}) into {_database_name(settings.pg_dsn)} and {settings.state_dir}"
    )
    print("next: hub evidence verify, then hub run (messages queued in RabbitMQ meanwhile are delivered)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    passphrase = argparse.ArgumentParser(add_help=False)
    passphrase.add_argument(
        "--passphrase-env",
        default="HUB_BACKUP_PASSPHRASE",
        metavar="VAR",
        help="environment variable holding the passphrase (default HUB_BACKUP_PASSPHRASE)",
    )
    p = sub.add_parser(
        "backup", parents=[passphrase], help="the store and the state directory in one encrypted file (备份)"
    )
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the backup")
    p.set_defaults(handler=cmd_backup)

    p = sub.add_parser(
        "restore", parents=[passphrase], help="restore a backup onto an empty database and state directory (恢复)"
    )
    p.add_argument("file", metavar="FILE", help="a file written by hub backup")
    p.set_defaults(handler=cmd_restore)
