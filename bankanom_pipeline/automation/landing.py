"""What the landing sensor has to do: find complete landing files that are new or changed since its
cursor (and not already loaded by a run it did not request), group them by the partition (day folder)
they belong to, and tell an open day (its files are appended) from a closed one (re-run whole)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bankanom_pipeline.ingest.raw_logs import landing_files
from bankanom_pipeline.transactions import raw as raw_transactions

Lister = Callable[[Path], list[Path]]  # a day folder -> the complete files its assets read


def transaction_files(folder: Path) -> list[Path]:
    """What transaction assets read from a day folder: the CSVs and the labels beside synthetic ones."""
    return sorted(raw_transactions.landing_files(folder) + raw_transactions.labels_files(folder))


@dataclass(frozen=True)
class LandedFile:
    day: str  # the day folder: the partition the file belongs to
    path: str  # relative to the landing logs root
    signature: str  # size and modification time: a re-delivered file (same name) has a new one


def scan(root: Path, files: Lister = landing_files, prefix: str = "") -> list[LandedFile]:
    """Complete files under ``root/<YYYY-MM-DD>/`` (the files the assets read: ``files`` lists them; logs
    by default). ``prefix`` goes in front of each relative path, to tell landing zones apart."""
    found = []
    if not root.is_dir():
        return found
    for folder in sorted(root.iterdir()):
        try:
            dt.date.fromisoformat(folder.name)
        except ValueError:
            continue  # not a partition folder
        for path in files(folder):
            stat = path.stat()
            found.append(
                LandedFile(
                    folder.name, f"{prefix}{folder.name}/{path.name}", f"{stat.st_size}:{stat.st_mtime_ns}"
                )
            )
    return found


def unreadable(root: Path, files: Lister = landing_files) -> list[str]:
    """What sits in the landing zone but will never be loaded: entries that are not day folders, and
    visible files in day folders the assets do not read (hidden ones are files still being written)."""
    if not root.is_dir():
        return []
    found = []
    for entry in sorted(root.iterdir()):
        try:
            dt.date.fromisoformat(entry.name)
        except ValueError:
            found.append(entry.name)
            continue
        if entry.is_dir():
            readable = set(files(entry))
            found += [
                f"{entry.name}/{p.name}"
                for p in sorted(entry.iterdir())
                if not p.name.startswith(".") and p not in readable
            ]
    return found


def now() -> float:
    """The sensor's clock (epoch seconds); tests move it."""
    return time.time()


def closes_at(day: str, close_after_seconds: float) -> float:
    """When ``day`` closes: its midnight plus the lateness allowed (automation.yaml's
    ``live_day_close_seconds``). Until then its new files are appended; afterwards the day is re-run."""
    midnight = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC) + dt.timedelta(days=1)
    return midnight.timestamp() + close_after_seconds


@dataclass
class Cursor:
    """Signature of every file already handed to a run, by relative path; and the days whose files were
    appended and that have not been re-run whole since (they are, once they close)."""

    seen: dict[str, str]
    open_days: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, text: str | None) -> Cursor:
        state = json.loads(text) if text else {}
        return cls(state.get("seen", {}), set(state.get("open_days", [])))

    def dump(self) -> str:
        return json.dumps({"seen": self.seen, "open_days": sorted(self.open_days)}, sort_keys=True)

    def known(self, files: list[LandedFile], recorded: dict[str, str]) -> list[LandedFile]:
        """Mark seen the ``files`` a load already recorded with the same signature; return the others."""
        loaded = [f for f in files if recorded.get(f.path) == f.signature]
        self.mark(loaded)
        return [f for f in files if recorded.get(f.path) != f.signature]

    def fresh(self, files: list[LandedFile]) -> dict[str, list[LandedFile]]:
        """New or changed files, by day."""
        by_day: dict[str, list[LandedFile]] = {}
        for f in files:
            if self.seen.get(f.path) != f.signature:
                by_day.setdefault(f.day, []).append(f)
        return by_day

    def mark(self, files: list[LandedFile]) -> None:
        self.seen.update({f.path: f.signature for f in files})

    def forget_missing(self, files: list[LandedFile]) -> None:
        """Drop entries of files no longer in the landing zone (archived or deleted), so the cursor stays
        as small as the zone; a file that comes back is then new again, and re-runs its partition."""
        present = {f.path for f in files}
        self.seen = {p: s for p, s in self.seen.items() if p in present}


def run_key(day: str, files: list[LandedFile], kind: str = "landing") -> str:
    """The same set of new files always gives the same key, so Dagster never launches it twice."""
    digest = hashlib.sha256("\n".join(sorted(f"{f.path}={f.signature}" for f in files)).encode())
    return f"{kind}:{day}:{digest.hexdigest()[:16]}"
