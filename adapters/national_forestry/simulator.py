"""The simulated national reporting system: the other side of the folder contract (README.md), for the tests and
the demo.

- ``submit(name, data)`` puts a file in the outbox as the contract says (write ``.name.tmp``, fsync, rename);
- ``collect()`` imports the inbox as the contract says: each ``*.xml`` (never dot-files or ``*.tmp``) is read,
  recorded by its message id (the file name), then deleted; a message id imported before is a duplicate
  (counted in ``duplicates``, not imported again);
- ``down()`` takes the share away (its root folder is renamed: the adapter finds neither folder), ``up()`` brings
  it back and writes the files submitted meanwhile.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from adapters.national_forestry.folders import write_atomic
from adapters.national_forestry.mapping import is_candidate, parse_reason


@dataclass
class Imported:
    name: str
    service: str
    message_id: str
    data: bytes


@dataclass
class NationalSystem:
    root: Path
    imported: dict[str, Imported] = field(default_factory=dict)
    duplicates: Counter[str] = field(default_factory=Counter)
    _pending: list[tuple[str, bytes]] = field(default_factory=list)
    _down: bool = False

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        for p in (self.outbox, self.inbox):
            p.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------------------------ layout

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def sent(self) -> Path:
        return self.outbox / "sent"

    @property
    def failed(self) -> Path:
        return self.outbox / "failed"

    @property
    def _away(self) -> Path:
        return self.root.with_name(self.root.name + ".down")

    def config(self) -> dict[str, str]:
        """The adapter's ``[adapter]`` folders for this share."""
        return {"outbox": str(self.outbox), "inbox": str(self.inbox)}

    # ------------------------------------------------------------------------------------------ up and down

    def down(self) -> None:
        if not self._down:
            os.rename(self.root, self._away)
            self._down = True

    def up(self) -> None:
        if self._down:
            os.rename(self._away, self.root)
            self._down = False
        for name, data in self._pending:
            write_atomic(self.outbox, name, data)
        self._pending.clear()

    @property
    def is_down(self) -> bool:
        return self._down

    # ------------------------------------------------------------------------------------------ outbox

    def submit(self, name: str, data: bytes) -> None:
        """A complete file into the outbox (while down: kept, written on ``up()``)."""
        if self._down:
            self._pending.append((name, data))
        else:
            write_atomic(self.outbox, name, data)

    def write_raw(self, name: str, data: bytes) -> None:
        """A file written in place, without the rename (a writer that ignores the contract)."""
        (self.outbox / name).write_bytes(data)

    def waiting(self) -> list[str]:
        """Outbox files not yet taken."""
        if self._down:
            return [n for n, _ in self._pending]
        return sorted(n for n in os.listdir(self.outbox) if (self.outbox / n).is_file() and is_candidate(n))

    def sent_files(self) -> list[str]:
        return sorted(n for n in os.listdir(self.sent) if n.endswith(".xml") and not n.endswith(".receipt.xml"))

    def failed_files(self) -> dict[str, dict[str, str]]:
        """Failed file name → its reason file's fields."""
        out: dict[str, dict[str, str]] = {}
        if not self.failed.is_dir():
            return out
        for n in sorted(os.listdir(self.failed)):
            if n.endswith(".xml"):
                reason = self.failed / f"{n}.reason.txt"
                out[n] = parse_reason(reason.read_text(encoding="utf-8")) if reason.exists() else {}
        return out

    def receipt_outcome(self, name: str) -> str:
        """The outcome in the hub's signed receipt kept beside a sent file."""
        root = etree.fromstring((self.sent / f"{name}.receipt.xml").read_bytes())
        for el in root.iter("{*}Outcome"):
            return (el.text or "").strip()
        return ""

    # ------------------------------------------------------------------------------------------ inbox

    def peek(self) -> dict[str, Imported]:
        """What the inbox holds now (complete files only), by message id, left in place (the demo leaves its files
        for the operator to look at)."""
        if self._down:
            return {}
        out: dict[str, Imported] = {}
        for n in sorted(os.listdir(self.inbox)):
            if is_candidate(n):
                service, _, rest = n.rpartition("_")
                out[rest[: -len(".xml")]] = Imported(n, service, rest[: -len(".xml")], (self.inbox / n).read_bytes())
        return out

    def collect(self) -> list[Imported]:
        """Import what the inbox holds (complete files only), delete it, dedup by message id."""
        if self._down:
            return []
        new: list[Imported] = []
        for n in sorted(os.listdir(self.inbox)):
            if not is_candidate(n):
                continue
            path = self.inbox / n
            data = path.read_bytes()
            service, _, rest = n.rpartition("_")
            mid = rest[: -len(".xml")]
            if mid in self.imported:
                self.duplicates[mid] += 1
            else:
                item = self.imported[mid] = Imported(n, service, mid, data)
                new.append(item)
            path.unlink()
        return new

    def remove(self) -> None:
        shutil.rmtree(self._away, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)
