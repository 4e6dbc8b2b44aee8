"""The API's CPU per request on the live path, in process: ``GET /scores/latest`` as ``live_bench.py``
polls it (``since`` = the newest event seen minus ``--window`` seconds, pages of 1,000) and ``GET /incidents?limit=200``,
against a published snapshot (a DuckDB of ``--batch-events`` scored events of the day before) and a live
store of ``--live-events`` events at 1,000 events/s with a fifth of them flagged and ``--incidents`` live
incidents, one of them holding ``--large-incident`` events (what models trained at the default rate do
at 1,000 events/s). Between two polls the store gains ``--per-poll`` events (a commit of the stream).

CPU is the process's (``time.process_time``: the app and the in-process test client together, the
client's share measured by ``GET /health`` beside it), per request, median and p90 over ``--polls``
polls, after ``--warm`` polls that are not counted (the first builds the snapshot's shadow).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import orjson

sys.path.insert(0, str(Path(__file__).parent))
sys.path.append(str(Path(__file__).resolve().parent.parent))
from _common import cpu, record

from bankanom_api.state import Snapshot
from bankanom_pipeline.live.incidents import LiveIncidents
from bankanom_pipeline.live.store import EVENT_COLUMNS, LiveStore
from tests.api_server import api_client

KEY = "bench-key"
H = {"X-API-Key": KEY}
DAY = dt.date(2026, 3, 1)
LIVE_START = dt.datetime(2026, 3, 2, 0, 0, 0)
SERVICES = ("auth-service", "payment-service", "api-gateway", "transaction-service", "postgres-db")
EPOCH = dt.datetime(1970, 1, 1)


def us(value: dt.datetime) -> int:
    return (value - EPOCH) // dt.timedelta(microseconds=1)


def snapshot(events: int, incidents: int) -> Snapshot:
    """A published snapshot of the day before the live one: scored events and incidents."""
    con = duckdb.connect()
    con.execute(
        f"""CREATE TABLE scored_events AS SELECT DATE '{DAY}' AS partition_date,
              'B' || lpad(i::VARCHAR, 8, '0') AS event_id,
              TIMESTAMP '{DAY} 00:00:00' + to_microseconds((i * 86400000000 // {events})::BIGINT) AS ts,
              (['auth-service', 'payment-service', 'api-gateway'])[1 + i % 3] AS source_service,
              'USR-' || (i % 500)::VARCHAR AS user_id, '10.0.0.' || (i % 250)::VARCHAR AS ip_address,
              NULL::VARCHAR AS correlation_id, 0.5 AS if_score, 0.4 AS lof_score,
              (0.3 + (i % 10) / 20)::DOUBLE AS ensemble_score, i % 10 = 9 AS if_flag, false AS lof_flag,
              i % 10 = 9 AS is_anomaly, 'if-1' AS if_version, 'lof-1' AS lof_version
            FROM range({events}) t(i)"""
    )
    con.execute(
        f"""CREATE TABLE incidents AS SELECT DATE '{DAY}' AS partition_date,
              'INC-B' || i::VARCHAR AS incident_id,
              TIMESTAMP '{DAY} 00:00:00' + to_microseconds((i * 86400000000 // {incidents})::BIGINT) AS start_ts,
              TIMESTAMP '{DAY} 00:00:00' + to_microseconds((i * 86400000000 // {incidents} + 60000000)::BIGINT) AS end_ts,
              2::BIGINT AS event_count, ['auth-service'] AS services, ['USR-0'] AS users, ['10.0.0.1'] AS ips,
              1::BIGINT AS user_count, 1::BIGINT AS ip_count, 0.9 AS max_score, 0.9 AS mean_score,
              'High' AS severity, true AS reported, 'auth-service' AS origin_service, 'user USR-0' AS origin_entity,
              NULL::VARCHAR AS scenario_id, NULL::VARCHAR AS scenario_name, NULL::DOUBLE AS scenario_confidence,
              '[]' AS scenario_alternatives, '[]' AS top_features, 'batch' AS summary, 'open' AS status
            FROM range({incidents}) t(i)"""
    )
    con.execute(
        """CREATE TABLE incident_events AS SELECT partition_date, 'x' AS incident_id, event_id, ts,
           source_service, user_id, ip_address, ensemble_score FROM scored_events WHERE false"""
    )
    rows = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("scored_events", "incidents")}
    rows["incident_events"] = 0
    pointer = {"file": "snapshot-bench.duckdb", "published_at": f"{DAY}T23:59:00+00:00", "rows": rows}
    return Snapshot(pointer, con, time.time())


def live_rows(first_seq: int, n: int, rate: float) -> list[tuple]:
    """Events ``first_seq`` .. at ``rate`` per second from LIVE_START; every fifth flagged."""
    out = []
    models = orjson.dumps({"isolation_forest": "if-1", "local_outlier_factor": "lof-1"}).decode()
    for seq in range(first_seq, first_seq + n):
        ts = us(LIVE_START) + int(seq * 1_000_000 / rate)
        flagged = seq % 5 == 0
        values = {
            "seq": seq,
            "source": "mock",
            "source_offset": f"1:{seq}",
            "event_id": f"L{seq:09d}",
            "ts": ts,
            "partition_date": LIVE_START.date().isoformat(),
            "source_service": SERVICES[seq % len(SERVICES)],
            "log_level": "INFO",
            "message": "User login successful",
            "correlation_id": None,
            "user_id": f"USR-{seq % 997}",
            "ip_address": f"10.1.{seq % 7}.{seq % 250}",
            "geo_location": None,
            "metrics": '{"response_time_ms": 12}',
            "status": "ingested",
            "isolation_forest": 0.5,
            "local_outlier_factor": 0.4,
            "ensemble_score": 0.95 if flagged else 0.3 + (seq % 10) / 40,
            "if_flag": int(flagged),
            "lof_flag": 0,
            "is_anomaly": int(flagged),
            "model_versions": models,
            "unscored": None,
            "emitted_at": None,
            "scored_at": 0.0,
        }
        out.append(tuple(values[c] for c in EVENT_COLUMNS))
    return out


def live_incidents(cur, rows: list[tuple], count: int, large: int) -> None:
    """``count`` incidents over the flagged rows: the first ``large`` flagged events in one, the rest in
    incidents of a few events each."""
    flagged = [r for r in rows if r[EVENT_COLUMNS.index("is_anomaly")]]
    ts_at, id_at = EVENT_COLUMNS.index("ts"), EVENT_COLUMNS.index("event_id")
    groups = [flagged[:large]]
    rest = flagged[large:]
    per = max(1, len(rest) // max(1, count - 1))
    groups += [rest[i : i + per] for i in range(0, len(rest), per)][: count - 1]
    for members in groups:
        first = members[0]
        iid = f"INC-{LIVE_START:%Y%m%d}-{first[id_at][-10:]}"
        cur.execute(
            """INSERT INTO incidents (incident_id, partition_date, start_ts, end_ts, event_count, services,
               users, ips, user_count, ip_count, max_score, mean_score, severity, reported, origin_service,
               origin_entity, scenario_id, scenario_name, scenario_confidence, scenario_alternatives,
               top_features, summary, status, first_event_id, merged_into, opened_at, updated_at)
               VALUES (?, ?, ?, ?, ?, '["auth-service"]', '["USR-0"]', '["10.0.0.1"]', 1, 1, 0.95, 0.95,
                       'High', 1, 'auth-service', 'user USR-0', NULL, NULL, NULL, '[]', '[]', 'live', 'open',
                       ?, NULL, 0, 0)""",
            [
                iid,
                LIVE_START.date().isoformat(),
                first[ts_at],
                members[-1][ts_at],
                len(members),
                first[id_at],
            ],
        )
        cur.executemany(
            "INSERT INTO incident_events (incident_id, event_id) VALUES (?, ?)",
            [(iid, m[id_at]) for m in members],
        )


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "n": len(values),
        "median_ms": round(1000 * statistics.median(ordered), 2),
        "p90_ms": round(1000 * ordered[int(0.9 * (len(ordered) - 1))], 2),
        "max_ms": round(1000 * ordered[-1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-events", type=int, default=1_000_000)
    parser.add_argument("--batch-incidents", type=int, default=2_000)
    parser.add_argument("--live-events", type=int, default=400_000)
    parser.add_argument("--incidents", type=int, default=2_000)
    parser.add_argument("--large-incident", type=int, default=60_000)
    parser.add_argument("--per-poll", type=int, default=200, help="events committed between two polls")
    parser.add_argument("--polls", type=int, default=100)
    parser.add_argument("--warm", type=int, default=3)
    parser.add_argument(
        "--window", type=float, default=1.0, help="a poll reads from the newest event seen minus this (s)"
    )
    args = parser.parse_args()
    rate = 1_000.0
    root = Path(tempfile.mkdtemp(prefix="live-api-bench-"))
    store_path = root / "live" / "live.sqlite"
    rows = live_rows(1, args.live_events, rate)
    with LiveStore(store_path, extra_schema=LiveIncidents.SCHEMA) as store:
        store.commit(
            rows,
            offsets={"mock": f"1:{len(rows)}"},
            extra=lambda cur: live_incidents(cur, rows, args.incidents, args.large_incident),
        )
    snap = snapshot(args.batch_events, args.batch_incidents)
    seq = len(rows) + 1
    costs: dict[str, list[float]] = {
        "scores_latest_poll": [],
        "scores_latest_page": [],
        "incidents": [],
        "health": [],
    }
    first: dict[str, float] = {}
    with api_client(root, KEY, rate_limit="1000000/second") as app, LiveStore(store_path) as writer:
        app.app.state.serving.snapshot = snap

        def timed(name: str, path: str, params: dict | None = None) -> dict:
            began = time.process_time()
            answer = app.get(path, params=params, headers=H)
            took = time.process_time() - began
            assert answer.status_code == 200, answer.text
            if name not in first:
                first[name] = took
            return {"took": took, "body": answer.json()}

        newest = EPOCH + dt.timedelta(microseconds=rows[-1][EVENT_COLUMNS.index("ts")])
        for poll in range(args.warm + args.polls):
            writer.commit(
                live_rows(seq, args.per_poll, rate), offsets={"mock": f"1:{seq + args.per_poll - 1}"}
            )
            seq += args.per_poll
            since = (newest - dt.timedelta(seconds=args.window)).strftime("%Y-%m-%dT%H:%M:%SZ")
            offset, poll_cost = 0, 0.0
            while True:
                got = timed(
                    "scores_latest_page", "/scores/latest", {"since": since, "limit": 1000, "offset": offset}
                )
                poll_cost += got["took"]
                items = got["body"]["items"]
                if poll >= args.warm:
                    costs["scores_latest_page"].append(got["took"])
                if items:
                    newest = max(newest, max(dt.datetime.fromisoformat(i["ts"].rstrip("Z")) for i in items))
                offset += len(items)
                if not items or offset >= got["body"]["total"]:
                    break
            incidents = timed("incidents", "/incidents", {"limit": 200})
            health = timed("health", "/health")
            if poll >= args.warm:
                costs["scores_latest_poll"].append(poll_cost)
                costs["incidents"].append(incidents["took"])
                costs["health"].append(health["took"])
    result = {
        "cpu": cpu(),
        "args": vars(args),
        "first_request_cpu_ms": {k: round(1000 * v, 1) for k, v in first.items()},
        "cpu_per_request": {k: summary(v) for k, v in costs.items()},
    }
    record("live_api_bench", result)


if __name__ == "__main__":
    main()
