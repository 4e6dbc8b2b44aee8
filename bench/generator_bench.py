"""Mock generator throughput: N events rendered and written as JSONL files (batch mode)."""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import record, repeat

from bankanom_pipeline.generator.config import load_config
from bankanom_pipeline.generator.engine import Generator
from bankanom_pipeline.generator.writer import write_range

START = int(dt.datetime(2026, 1, 5, tzinfo=dt.UTC).timestamp())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    config = load_config()
    work = Path(tempfile.mkdtemp(prefix="bankanom-bench-"))

    def clean() -> None:
        # deleting the previous run's ~570 MB is file-system work, not generation: done untimed
        shutil.rmtree(work / "logs", ignore_errors=True)

    def once() -> int:
        summary = write_range(Generator(config), work / "logs", START, events=args.events)
        return summary.events

    try:
        result = repeat(once, args.runs, setup=clean)
        result["bytes_per_event"] = (
            sum(f.stat().st_size for f in (work / "logs").rglob("*.jsonl")) / args.events
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["target_items_per_s"] = 500_000
    record("generator", result)


if __name__ == "__main__":
    main()
