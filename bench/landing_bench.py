"""The Dagster run one new landing file costs, early and late in a live day: the live day's path
(``landing_append_job``: the file appended to its day, validated) beside the loop it replaces (the whole
day's ``features_job`` re-run for every file: raw -> validated -> features; scores, incidents, evaluation
and the snapshot followed on top of it, so its figure here is a lower bound of that loop).

A day is generated once as hourly files (the config's rate unless ``--rate``), untimed; for each hour H
(default 1 and 20) a fresh warehouse holds the day's first H hours (loaded and validated whole, untimed),
then one-minute files (the mock server's rotation) land one after another: each is appended in its own
run (timed: wall and CPU seconds of the process, which runs it in process), and the whole-day rerun is
timed after them. Medians of ``--runs``; the append must be flat (H=20 / H=1 close to 1) where the rerun
grows with the day. The run launched by the daemon adds its process start, the same for both.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_pace, record

DAY = dt.date(2026, 3, 9)  # seeds table: logs seed 7 (the packaged config's), customers 7; cost only
DAY_START = int(dt.datetime.combine(DAY, dt.time(), dt.UTC).timestamp())
ROTATION_S = 60
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn) -> dict:
    began_wall, began_cpu = time.perf_counter(), _cpu()
    fn()
    return {"wall_s": time.perf_counter() - began_wall, "cpu_s": _cpu() - began_cpu}


def generate(data: Path, hours: int, files: int, rate: float | None) -> None:
    """Hourly files for the day's first ``hours`` hours, and ``files`` one-minute files after each hour
    measured, kept apart (``minutes/<H>/``) until they land."""
    from bankanom_pipeline.generator.config import load_config
    from bankanom_pipeline.generator.engine import Generator
    from bankanom_pipeline.generator.writer import write_range

    config = load_config()
    if rate is not None:
        generation = config.log_generation.model_copy(update={"logs_per_second": rate})
        config = config.model_copy(update={"log_generation": generation})
    write_range(Generator(config), data / "hours", DAY_START, end_s=DAY_START + hours * 3600, chunk_s=3600)
    for hour in HOURS:
        start = DAY_START + hour * 3600
        write_range(
            Generator(config.model_copy(update={"seed": config.seed + 1000 + hour})),
            data / "minutes" / str(hour),
            start,
            end_s=start + files * ROTATION_S,
            chunk_s=ROTATION_S,
        )


def measure(data: Path, hour: int, runs: int, work: Path) -> dict:
    import dagster as dg

    from bankanom_pipeline.definitions import defs
    from bankanom_pipeline.defs.resources import WarehouseResource
    from bankanom_pipeline.defs.validation.gx import GX
    from bankanom_pipeline.generator.config import load_config
    from bankanom_pipeline.ingest.raw_logs import load_partition
    from bankanom_pipeline.settings import mock_config_path
    from bankanom_pipeline.validation.logs import validate_partition

    shutil.rmtree(work, ignore_errors=True)
    folder = work / "landing" / "logs" / DAY.isoformat()
    folder.mkdir(parents=True)
    for path in sorted((data / "hours" / DAY.isoformat()).glob("*.jsonl"))[:hour]:
        shutil.copy(path, folder / path.name)
    warehouse = WarehouseResource(database=str(work / "w.duckdb"), landing_dir=str(work / "landing"))
    services = load_config(mock_config_path()).service_sources
    with warehouse.connection() as con:  # the day so far, as the appends left it (untimed)
        held = load_partition(con, warehouse.landing_logs, DAY).loaded
        validate_partition(con, DAY, services, GX)
    append_job = defs.resolve_job_def("landing_append_job")
    minutes = sorted((data / "minutes" / str(hour) / DAY.isoformat()).glob("*.jsonl"))
    appends, lines = [], []
    with dg.DagsterInstance.ephemeral() as instance:
        for path in minutes[:runs]:
            shutil.copy(path, folder / path.name)  # lands: the next rotation
            config = {"day": DAY.isoformat(), "files": [f"{DAY.isoformat()}/{path.name}"]}

            def append(config=config):
                result = append_job.execute_in_process(
                    run_config={"ops": {"append_landing_files": {"config": config}}, **QUIET},
                    resources={"warehouse": warehouse},
                    instance=instance,
                )
                assert result.success
                [event] = result.asset_materializations_for_node("append_landing_files")
                lines.append(event.metadata["lines_read"].value)

            appends.append(timed(append))
        features_job = defs.resolve_job_def("features_job")

        def rerun():
            result = features_job.execute_in_process(
                partition_key=DAY.isoformat(),
                run_config=QUIET,
                resources={"warehouse": warehouse},
                instance=instance,
            )
            assert result.success

        reruns = [timed(rerun) for _ in range(runs)]
    median = {
        name: {k: statistics.median(r[k] for r in rows) for k in ("wall_s", "cpu_s")}
        for name, rows in (("append", appends), ("whole_day_rerun", reruns))
    }
    median["append"]["cpu_ms_per_line"] = 1000 * median["append"]["cpu_s"] / statistics.median(lines)
    return {
        "hour": hour,
        "events_in_day_before": held,
        "lines_per_file": statistics.median(lines),
        **median,
        "runs": {"append": appends, "whole_day_rerun": reruns},
    }


HOURS = (1, 20)


def main() -> None:
    global HOURS
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hours", type=int, nargs="+", default=list(HOURS))
    parser.add_argument("--rate", type=float, default=None, help="events/s (default: the config's)")
    parser.add_argument("--data", type=Path, help="keep the generated day here (reused when present)")
    args = parser.parse_args()
    HOURS = tuple(args.hours)
    data = args.data or Path(tempfile.mkdtemp(prefix="landing-bench-"))
    if not (data / "hours").exists():
        began = time.perf_counter()
        generate(data, max(HOURS), args.runs, args.rate)
        print(f"generated in {time.perf_counter() - began:.0f}s under {data}")
    pace = machine_pace()
    work = Path(tempfile.mkdtemp(prefix="landing-bench-work-"))
    results = []
    for hour in HOURS:
        result = measure(data, hour, args.runs, work / str(hour))
        results.append(result)
        a, w = result["append"], result["whole_day_rerun"]
        print(
            f"H={hour:>2}  day so far {result['events_in_day_before']:>9,} events, file "
            f"{result['lines_per_file']:,.0f} lines:  append {a['wall_s']:.2f} s wall {a['cpu_s']:.2f} CPU-s "
            f"({a['cpu_ms_per_line']:.2f} CPU-ms a line)  |  "
            f"whole-day rerun {w['wall_s']:.2f} s wall {w['cpu_s']:.2f} CPU-s"
        )
    first, last = results[0], results[-1]
    ratios = {
        f"{name}_{k}_H{last['hour']}_over_H{first['hour']}": last[name][k] / first[name][k]
        for name in ("append", "whole_day_rerun")
        for k in ("wall_s", "cpu_s")
    }
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}")
    shutil.rmtree(work, ignore_errors=True)
    record(
        "landing_bench",
        {"day": DAY.isoformat(), "machine_pace_s": pace, "results": results, "ratios": ratios},
    )


if __name__ == "__main__":
    main()
