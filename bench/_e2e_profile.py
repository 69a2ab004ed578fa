"""``bench/e2e.py --profile DIR``: sample the hub workers with py-spy during the hub phases and say where their
CPU time goes per message step.

py-spy (``pip install py-spy``) attaches to each worker pid (``py-spy record --format raw``: one line per distinct
stack, ``frame;frame;… count``). Idle samples (the event loop waiting in epoll) are left out by py-spy itself, so
the shares are of busy time. A sample counts for every row of ``ROWS`` one of its frames matches (inclusive time,
as in a flame graph), so nested rows are parts of their parent; "outside a batch" is what the worker does
beyond ``Worker.handle`` (aiormq reading frames, the event loop); the "across steps" rows cut across the tree. A profiled run is slower than a plain
one (sampling pauses the worker): read the shares, not the figures.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

#: The worker's call tree, as (label, regex on one frame "Class.function (file)"). A sample counts for a row when
#: any frame of its stack matches (inclusive time, as in a flame graph); rows are nested by their indentation.
ROWS: tuple[tuple[str, str], ...] = (
    ("Worker.handle: one batch", r"^Worker\.handle \("),
    ("  examine: steps 1–5", r"^Processor\.examine \("),
    ("    1 parse (hardened lxml)", r"^parse \(hub/envelope/intake"),
    ("    2 validate (XSD + model)", r"^SchemaRegistry\.validate \("),
    ("    3 verify", r"^Verifier\.verify \("),
    ("      signature profile check", r"^check_profile \("),
    ("      C14N + digest + ECDSA", r"^Verifier\._check_signature \("),
    ("      certificate path", r"^Verifier\._trusted_leaf \("),
    ("    Envelope model", r"^Envelope\.from_(tree|header) \("),
    ("    5 route + gate", r"^(Router\.decide|gate) \("),
    ("  6 record_batch (PG tx 1)", r"^Worker\._record \("),
    ("  7 finish: delivery + receipt XML", r"^Processor\.finish \("),
    ("    sign delivery (canonical bytes + signature)", r"^Processor\.sign_delivery \("),
    ("    receipt (build, sign, bytes)", r"^Processor\.receipt \("),
    ("  8 publish_many", r"^Transport\.publish_many \("),
    ("  record_sent (PG tx 2)", r"^Worker\._record_sent \("),
    ("  ack", r"^Transport\.ack \("),
    ("  decision log lines (JSON)", r"^Worker\._log \("),
    ("outside a batch: AMQP in, event loop", r"^(?!)"),  # computed: samples without Worker.handle
    ("across steps: evidence append (lock, hash, insert)", r"^append \(hub/store/evidence"),
    ("across steps: evidence hashing (Python)", r"^chain \(hub/store/evidence"),
    ("across steps: Signer.sign (hub)", r"^Signer\.sign \("),
    ("across steps: all C14N", r"^c14n \(hub/trust"),
    ("across steps: all asyncpg", r"\(asyncpg/"),
    ("across steps: aiormq + pamqp", r"\((aiormq|pamqp)/"),
    ("across steps: socket writes", r"^_SelectorSocketTransport\.write \("),
)
_COMPILED = [(label, re.compile(rx)) for label, rx in ROWS]
_HANDLE = _COMPILED[0][1]


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


class Profiler:
    """py-spy record on each pid while a phase runs."""

    def __init__(self, out_dir: Path) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.exe = exe
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self._procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, pids: list[int], tag: str) -> None:
        for pid in pids:
            out = self.out_dir / f"{tag}-{pid}.txt"
            p = subprocess.Popen(
                [
                    self.exe,
                    "record",
                    "--pid",
                    str(pid),
                    "--format",
                    "raw",
                    "--nolineno",
                    "--rate",
                    "200",
                    "--output",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self._procs.append((p, out))
        time.sleep(0.3)  # let py-spy attach before the phase starts

    def stop(self) -> list[Path]:
        files = []
        for p, _ in self._procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p, out in self._procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
            if out.exists():
                files.append(out)
        self._procs = []
        return files


def _samples(files: list[Path]) -> list[tuple[list[str], int]]:
    out = []
    for f in files:
        for line in f.read_text(errors="replace").splitlines():
            stack, _, n = line.rpartition(" ")
            if stack and n.isdigit():
                frames = [fr.strip() for fr in stack.split(";")]
                if any(fr.startswith("spawn_main ") for fr in frames):  # a worker, not the resource tracker
                    out.append((frames, int(n)))
    return out


def breakdown(files: list[Path]) -> tuple[Counter[str], int]:
    """Inclusive samples per row of ``ROWS`` and the total number of samples."""
    counts: Counter[str] = Counter()
    total = 0
    for frames, n in _samples(files):
        total += n
        inside = False
        for label, rx in _COMPILED:
            if any(rx.search(fr) for fr in frames):
                counts[label] += n
                inside = inside or rx is _HANDLE
        if not inside:
            counts["outside a batch: AMQP in, event loop"] += n
    return counts, total


def leaf_functions(files: list[Path], top: int = 25) -> list[tuple[str, int]]:
    """Self time per innermost Python frame (where the CPU actually was)."""
    counts: Counter[str] = Counter()
    for frames, n in _samples(files):
        counts[frames[-1]] += n
    return counts.most_common(top)


def print_breakdown(title: str, files: list[Path], cpu_ms_per_msg: float) -> None:
    """Each row's share of the workers' busy samples and, scaled by their measured CPU per message, ms/message."""
    counts, total = breakdown(files)
    workers = len({f.stem.rsplit("-", 1)[-1] for f in files})
    if not total:
        print(f"{title}: no samples (is py-spy allowed to attach? it needs ptrace rights)")
        return
    print(
        f"\n剖析 profile — {title}: {total} busy samples from {workers} worker(s); "
        f"{cpu_ms_per_msg:.2f} CPU ms/message in the hub processes (/proc)"
    )
    print(f"  {'':50}{'share':>8}{'ms/msg':>9}")
    for label, _ in ROWS:
        n = counts.get(label, 0)
        print(f"  {label:50}{n / total * 100:7.1f}%{n / total * cpu_ms_per_msg:9.3f}")
    print("  hottest frames (self time):")
    for frame, n in leaf_functions(files, 10):
        print(f"    {n / total * 100:5.1f}%  {frame[:100]}")


__all__ = ["ROWS", "Profiler", "breakdown", "leaf_functions", "print_breakdown"]
