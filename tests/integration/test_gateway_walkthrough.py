"""docs/gateway.md's curl walkthrough (curl 演练), run as it is written: the commands are read out of the document
and run in bash, each from its own working directory, with the real ``hub`` command, the real ``curl`` and a real
``hub gateway`` process against the real RabbitMQ and PostgreSQL. What a reader of the document copies must work:

- the operator's server certificate (``hub pki issue-server``) and ``hub gateway``;
- enrolment both ways: the SDK's three steps (``hub adapter enrol``/``approve``/``enrol --accept``) and by hand
  (``hub keygen``, ``hub pki issue``), each giving files that curl presents;
- ``hub sign`` of a draft, the submission (202 and a hub-signed receipt on standard output), the long-poll of the
  inbox (200, the hub-signed delivery and its tag in ``headers.txt``; both its signatures checked with the xmlsec1
  and perl commands of hub/trust/USAGE.md the walkthrough points to, trusting only the hub root), the
  acknowledgement (the same one again is 404: settled) and the state of the sent message (JSON);
- then "Java 端", from the files the walkthrough left: the document's openssl and keytool commands make the key and
  trust stores, Apache Santuario signs (``tests/interop/santuario/Sign.java``, the document's code) and a JDK-only
  client (``tests/interop/java/GatewayClient.java``) launched with the document's ``-D`` settings submits, polls
  and acknowledges.

Only what cannot be the same on a test machine is rewritten, and each rewrite must find its text (so a change of
the document fails here instead of going unchecked): the port 8443 (a free one), the gateway's ``0.0.0.0`` (the
loopback), the placeholder ``<报文标识>`` (the id the receipt names). The draft and ``hub-root.pem`` are what the
document says the reader has: an unsigned envelope, and the hub root the operator handed over."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import PROVINCE, Hub, document, sample_body
from test_trust_santuario import JARS as SANTUARIO_JARS
from test_trust_santuario import METHODS as SIGNATURE_METHODS
from test_trust_santuario import SOURCES as SANTUARIO

from hub.envelope import Party, Recipient, build, to_bytes
from hub.envelope.model import ENV_NS
from hub.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.integration

PORTAL = "prov-220000-portal"  # the system the walkthrough enrols (routes/directory.xml)
APPROVAL = "prov-220000-approval"  # what the portal may send an approval.application to, and hears back from
DOC = PROJECT_ROOT / "docs" / "gateway.md"
JAVA_CLIENT = PROJECT_ROOT / "tests" / "interop" / "java" / "GatewayClient.java"


def walkthrough(heading: str = "### curl 演练", doc: Path = DOC) -> list[str]:
    """The commands of the first ``sh`` block under ``heading`` in ``doc``, one string each (continuation lines
    joined, comment lines dropped; a comment after a command stays for bash to skip)."""
    text = doc.read_text(encoding="utf-8")
    start = text.index(heading)
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block is not None, f"{doc.name}: {heading!r} has no sh block"
    commands: list[str] = []
    pending = ""
    for line in block.group(1).splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1].rstrip() + " "
            continue
        commands.append(pending + line.strip())
        pending = ""
    assert not pending, "docs/gateway.md: the walkthrough ends in a continuation line"
    return commands


def take(commands: list[str], prefix: str, *, first: bool = False) -> str:
    """The one command that starts with ``prefix`` (``first``: the first of them), removed from ``commands``."""
    found = [c for c in commands if c.startswith(prefix)]
    assert found and (first or len(found) == 1), (
        f"docs/gateway.md's walkthrough: {len(found)} commands start with {prefix!r}"
    )
    commands.remove(found[0])
    return found[0]


def rewritten(command: str, old: str, new: str) -> str:
    assert old in command, f"the walkthrough's command no longer holds {old!r}: {command}"
    return command.replace(old, new)


def approval_application() -> Any:
    """A draft approval.application from the portal to the approval system (unsigned: what the reader signs)."""
    return document(
        PORTAL,
        [Recipient.to(PROVINCE, APPROVAL)],
        service="approval.application",
        body=sample_body("approval.application", "tree-felling-licence.xml"),
    )


def approval_status() -> Any:
    """An approval.status from the approval system to the portal (unsigned: ``Hub.send`` signs it)."""
    return build(
        service="approval.status",
        sender=Party(PROVINCE, APPROVAL),
        recipients=[Recipient.to(PROVINCE, PORTAL)],
        body=sample_body("approval.status"),
        classification="公开",
        urgency="平件",
    )


async def _verify_with_xmlsec1(shell: Shell, unit: Path) -> None:
    """The walkthrough's "验证投递" points at hub/trust/USAGE.md's xmlsec1 commands: run as written on the delivery the
    poll saved (the hub's signature, trusting only the hub root), then the perl line that removes it and xmlsec1 on
    what is left (the sender's). Rewritten: the root's path (the reader's copy is hub-root.pem) and the first
    command's file name (the walkthrough saved delivery.xml)."""
    usage = PROJECT_ROOT / "hub" / "trust" / "USAGE.md"
    commands = walkthrough("## Interoperability with xmlsec1", usage)
    hub_signature = rewritten(take(commands, "xmlsec1 --verify ", first=True), " signed.xml", " delivery.xml")
    strip = take(commands, "perl ")
    sender_signature = take(commands, "xmlsec1 --verify ", first=True)
    for command in (hub_signature, strip, sender_signature):
        if "xmlsec1" in command:
            done = await shell.run(rewritten(command, "var/pki/root-ca.pem", "hub-root.pem"), unit)
            assert done.stderr.startswith(b"OK"), done.stderr  # xmlsec1 says OK on standard error
        else:
            await shell.run(command, unit)
    # and the check is real: the sender's part with one character changed no longer verifies
    sender = (unit / "sender.xml").read_bytes()
    assert sender.count(b"</ds:Signature>") == 1, "the perl line left more or less than the sender's signature"
    tampered = sender.replace(b"<env:Urgency>", b"<env:Urgency> ", 1)
    assert tampered != sender
    (unit / "tampered.xml").write_bytes(tampered)
    again = rewritten(rewritten(sender_signature, "var/pki/root-ca.pem", "hub-root.pem"), "sender.xml", "tampered.xml")
    with pytest.raises(AssertionError, match="exited 1"):
        await shell.run(again, unit)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def settings(integration_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    from conftest import own_installation

    with own_installation(integration_settings, tmp_path_factory, "walk") as settings:
        yield settings


@pytest.fixture(scope="module")
async def hub(settings: Settings) -> AsyncIterator[Hub]:
    """The installation (CA, directory, the approval system enrolled for AMQP) and a worker for what the approval
    system sends over AMQP."""
    from hub.pipeline.client import enroll, load_signer

    h = Hub(settings)
    await h.setup()
    await enroll(settings, APPROVAL, PROVINCE)
    h.signers[APPROVAL] = load_signer(settings, APPROVAL)
    await h.start_worker()
    try:
        yield h
    finally:
        await h.close()


class Shell:
    """Runs the walkthrough's commands in bash as a reader would: ``hub`` on the PATH (this checkout's), the
    installation's settings in the environment, each in a working directory of its own."""

    def __init__(self, settings: Settings) -> None:
        self.env = settings.to_env()
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"

    async def run(self, command: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        """``command`` in bash (in a thread: the hub's worker runs on this event loop, and must go on working while
        curl long-polls)."""
        done = await asyncio.to_thread(
            subprocess.run, ["bash", "-c", command], cwd=cwd, env=self.env, capture_output=True, timeout=timeout
        )
        assert done.returncode == 0, (
            f"docs/gateway.md's walkthrough: `{command}` exited {done.returncode}:\n"
            f"{done.stderr.decode(errors='replace')[-3000:]}"
        )
        return done

    def start(self, command: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                ["bash", "-c", f"exec {command}"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )


async def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"hub gateway ended ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            await asyncio.sleep(0.2)
    raise AssertionError(f"hub gateway did not listen on {port} within {timeout} s")


def status_of(headers: Path) -> int:
    """The status of the last response ``curl -D`` wrote."""
    codes = re.findall(rb"^HTTP/[\d.]+ (\d{3})", headers.read_bytes(), re.M)
    assert codes, headers.read_bytes()
    return int(codes[-1])


async def test_the_curl_walkthrough_runs_as_written(hub: Hub, settings: Settings, tmp_path: Path) -> None:
    if shutil.which("curl") is None:  # scripts/ensure-services.sh installs it; never skipped
        raise AssertionError("curl is not installed (scripts/ensure-services.sh installs it)")
    commands = walkthrough()
    shell = Shell(settings)
    port = free_port()
    operator, sdk, unit = tmp_path / "operator", tmp_path / "sdk", tmp_path / "unit"
    for d in (operator, sdk, unit):
        d.mkdir()

    # —— the operator, once: the server certificate, then the gateway (on a free port, on the loopback)
    await shell.run(take(commands, "hub pki issue-server "), operator)
    assert (settings.state_dir / "pki" / "gateway" / "server.pem").is_file()
    serve = rewritten(take(commands, "hub gateway "), "--port 8443", f"--port {port}")
    serve = rewritten(serve, "--host 0.0.0.0", "--host 127.0.0.1")
    log = tmp_path / "gateway.log"
    gateway = shell.start(serve.split("#", 1)[0], log)
    try:
        await wait_for_port(port, gateway, log)
        here = [
            rewritten(c, "https://127.0.0.1:8443/", f"https://127.0.0.1:{port}/") if c.startswith("curl ") else c
            for c in commands
        ]
        await _the_unit(hub, settings, shell, here, sdk, unit, port)
        await _the_java_side(hub, shell, unit, port)
    finally:
        gateway.terminate()
        try:
            gateway.wait(30)
        except subprocess.TimeoutExpired:
            gateway.kill()
            gateway.wait()


async def _the_unit(
    hub: Hub, settings: Settings, shell: Shell, commands: list[str], sdk: Path, unit: Path, port: int
) -> None:
    # —— 1 (a): the SDK's three steps, in a directory of their own; the files they leave authenticate to the gateway
    for step in ("hub adapter enrol --system ", "hub adapter approve ", "hub adapter enrol --accept "):
        await shell.run(take(commands, step), sdk)
    home = sdk / "portal-home"
    for name in ("key.pem", "cert.pem", "hub-root.pem"):
        assert (home / name).is_file(), f"hub adapter enrol --accept left no {name}"
    probe = await shell.run(
        f"curl -s -o /dev/null -w '%{{http_code}}' --cert {home}/cert.pem --key {home}/key.pem "
        f"--cacert {home}/hub-root.pem 'https://127.0.0.1:{port}/v1/inbox?wait=0'",
        sdk,
    )
    assert probe.stdout == b"204", probe.stdout  # the portal's inbox is empty so far, and the SDK's files got in

    # —— 1 (b): by hand; the operator hands over the hub root as hub-root.pem (the document says so in words)
    await shell.run(take(commands, "hub keygen "), unit)
    await shell.run(take(commands, "hub pki issue "), unit)
    shutil.copy(settings.state_dir / "pki" / "root-ca.pem", unit / "hub-root.pem")
    # What the reader has before step 2: a draft envelope, unsigned (an approval application to the approval system).
    draft = approval_application()
    (unit / "draft.xml").write_bytes(to_bytes(draft))

    # —— 2, 3: sign and submit → the hub-signed receipt on standard output; the approval system gets the delivery
    await shell.run(take(commands, "hub sign "), unit)
    submitted = await shell.run(take(commands, "curl ", first=True) + " -f", unit)  # -f: an HTTP error fails the step
    receipt = hub.inbox(PORTAL).open(submitted.stdout)  # parses, validates, verifies the hub's signature
    assert receipt.service == "hub.receipt" and receipt.sender.system == "hub"
    assert b"<Outcome>accepted</Outcome>" in submitted.stdout
    message_id = receipt.ref_to
    got = await hub.drain(APPROVAL, expect=1)
    assert [env.message_id for _, env in got] == [message_id]

    # The approval system answers over AMQP: the status the portal's inbox will hold.
    status = await hub.send(APPROVAL, approval_status())

    # —— 4: the long-poll → 200, the delivery (the hub's and the approval system's signatures) and its tag
    poll = take(commands, "curl ", first=True)
    await shell.run(poll, unit, timeout=60)
    assert status_of(unit / "headers.txt") == 200, (unit / "headers.txt").read_bytes()
    opened = hub.inbox(PORTAL).open_delivery((unit / "delivery.xml").read_bytes())
    assert opened.envelope.message_id == status.message_id and opened.originator.system == APPROVAL
    await _verify_with_xmlsec1(shell, unit)

    # —— 5: the tag read from headers.txt, then the acknowledgement (204; -f fails the step on 404, an unknown tag);
    # the same acknowledgement again is 404: the delivery is settled, not waiting for its visibility timeout
    tag_line = take(commands, "tag=")
    ack = take(commands, "curl ", first=True)
    await shell.run(f'{tag_line}\ntest -n "$tag"\n{ack} -f', unit)
    again = await shell.run(f"{tag_line}\n{ack} -s -o /dev/null -w '%{{http_code}}'", unit)
    assert again.stdout == b"404", again.stdout

    # —— the state of the message the portal sent: accepted, delivered to the approval system
    query = rewritten(take(commands, "curl ", first=True), "<报文标识>", message_id)
    state = json.loads((await shell.run(query + " -f", unit)).stdout)
    assert state["message_id"] == message_id and state["state"] == "accepted", state
    assert [(d["recipient_system"], d["state"]) for d in state["deliveries"]] == [(APPROVAL, "delivered")], state
    assert [r["kind"] for r in state["receipts"]] == ["hub.receipt"], state
    # —— document tracking: the portal's message is listed while the approval system has not signed for it
    listing = json.loads((await shell.run(take(commands, "curl ", first=True) + " -f", unit)).stdout)
    listed = {m["message_id"]: m for m in listing["messages"]}
    assert message_id in listed and listing["next"] is None, listing
    assert [(d["recipient_system"], d["state"]) for d in listed[message_id]["deliveries"]] == [(APPROVAL, "delivered")]
    assert not commands, f"commands of the walkthrough this test does not run: {commands}"


async def _the_java_side(hub: Hub, shell: Shell, unit: Path, port: int) -> None:
    """ "Java 端": the key and trust stores made with the document's openssl and keytool commands from the files the
    walkthrough left, an envelope signed with Apache Santuario as the document shows (``Sign.java``), then submitted,
    polled and acknowledged by a JDK-only client (``GatewayClient.java``) launched with the document's ``-D``
    settings: a Java portal takes part with nothing the document does not name."""
    commands = walkthrough("### Java 端")
    await shell.run(take(commands, "openssl pkcs12 "), unit)
    await shell.run(take(commands, "keytool "), unit)
    launch = take(commands, "java ")
    assert not commands, f"commands of the Java block this test does not run: {commands}"
    classpath = ":".join(str(j) for j in SANTUARIO_JARS if j.exists())

    draft = approval_application()
    (unit / "draft-java.xml").write_bytes(to_bytes(draft))
    await shell.run(
        f"java -cp {classpath} {SANTUARIO / 'Sign.java'} keys/{PORTAL}.key {PORTAL}.pem draft-java.xml signed-java.xml "
        f"{SIGNATURE_METHODS['p256']}",
        unit,
        timeout=120,
    )
    status = await hub.send(APPROVAL, approval_status())  # what the Java portal's poll will find

    (unit / "java-out").mkdir()
    run = rewritten(launch, " …", f" -cp {classpath} {JAVA_CLIENT} https://127.0.0.1:{port} signed-java.xml java-out")
    lines = (await shell.run(run, unit, timeout=180)).stdout.decode().splitlines()
    submit, poll, ack, again = (line.split() for line in lines)
    assert submit[:2] == ["submit", "202"] and submit[3] == "accepted", lines
    receipt = hub.inbox(PORTAL).open((unit / "java-out" / "receipt.xml").read_bytes())
    assert receipt.ref_to == submit[2] == draft.findtext(f"{{{ENV_NS}}}Header/{{{ENV_NS}}}MessageId")
    # The approval system's queue: the Java portal's application (signed by Santuario, delivered by the hub), beside
    # the hub's receipts for the two statuses it sent.
    got = await hub.drain(APPROVAL, expect=3)
    assert sorted(env.service for _, env in got) == ["approval.application", "hub.receipt", "hub.receipt"], got
    assert [env.message_id for _, env in got if env.service == "approval.application"] == [submit[2]]
    assert poll == ["poll", "200", status.message_id], lines
    opened = hub.inbox(PORTAL).open_delivery((unit / "java-out" / "delivery.xml").read_bytes())
    assert opened.envelope.message_id == status.message_id and opened.originator.system == APPROVAL
    assert (ack, again) == (["ack", "204"], ["ack", "404"]), lines
