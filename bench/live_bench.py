"""The live loop end to end, over real processes on loopback: mock server → ``bankanom stream`` → live store
→ API. Issue 25's targets, measured at each ``--rate`` (default: the mock configuration's rate, then
1,000 events/s), each for ``--seconds``:

- **event latency**: for every emitted event, from the moment the mock server emitted it (the emit time its
  ``/stream`` endpoint reports) to the first poll of ``GET /scores/latest`` that lists it (polled every
  ``--poll`` seconds, each poll from the newest event seen minus ``--window``; the poll interval is part
  of the figure, so it is kept small);
- **incident latency**: for every anomaly instance (ground truth, read here from the emitted lines; the
  scorer drops it) with an event in a live incident, from its first *flagged* event's emit time (and,
  reported beside it, from its first event's) to the first poll of ``GET /incidents`` whose incident holds
  one of its events. Each event's incident time is the earlier of two sightings: a read of
  ``GET /incidents/{id}`` listing it (read whenever an incident in the list's first 200 changes; it lists
  the incident's first 100 events), and the first poll of ``/scores/latest`` listing the event if the
  store holds its membership at the end (the stream writes an event's membership and its incident's row
  in the commit that scores it: ``instances_timed_by_membership``). The detail read used to win when an
  event had one: some listed events only long after their membership was visible, which made the p99
  197 s at e419c66 where the store shows every instance's first flagged event in an incident within
  9.5 s of its emission. ``incident_tail`` breaks the instances over 10 s down by scenario;
- **detection time** (``detection_delay``): per scenario, each instance's first line -> its first event the
  store flagged, in event time (p50/p90/p99/max, the share over 10 s, instances never flagged): the part
  of the latency from the instance's first event that is detection, not delivery;
- **the rate emitted**: events per minute of the run as the ground-truth reader received them. At a rate
  other than the default the mock server runs a copy of the configuration with flat traffic (daily
  amplitude 0, weekend factor 1, no bursts: ``flat_config``), so the rate asked is the rate emitted;
  before, its seasonality and bursts made 1,000 asked 1,394-2,140/s by time of day (``--seasonal`` keeps
  them);
- **delivery**: emitted events missing from the live store, event ids stored twice, and emitted =
  scored + refused;
- **reconciled against the day's batch run** (``--batch-reconcile``; ``--reconcile-only RUN_FOLDER
  --data-dir DATA`` for a kept run): ``bankanom run --date <day>`` on a copy of the models' warehouse and
  promoted pair, fed the run's landing files, then ``reconcile_day``: events in both / only live / only
  batch, equal scores and flags, incidents matched / missed / extra, and how the live incidents nest
  over batch's (the largest live incident's events and the batch incidents it holds, batch incidents
  split over several live ones) (``batch_reconcile``);
- **the stream's CPU** per 1,000 events (user + system seconds of its process over the run) and its peak RSS.

The ground-truth reader is a second, independent consumer of the mock server's ``/stream`` (offsets are
per consumer; it never acknowledges anything the scorer depends on).

The yardstick, in the same run unless ``--no-yardstick``: the loop before issue 25 (``--before``, a commit:
``bankanom up``'s landing sensor re-running the day's partition per file) at the configuration's rate for
``--yardstick-seconds``: how far the newest event in ``/scores/latest`` trails the clock, sampled every 5 s.

Models (each run says which, ``models``): ``--data-dir`` (a ``bankanom demo`` data folder), else one is built here
(``bankanom demo``, about six minutes). Those are trained at the configuration's rate; at 1,000 events/s
they flag about a fifth of the events (the stress case). ``--rate-models`` runs each other rate a second
time on models trained on ``--rate-minutes`` of the traffic that run emits (``rate_models_data``; about
20 minutes to build on the 2-core machine, kept under ``--keep`` for the next run): the realistic case.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).parent))
sys.path.append(str(Path(__file__).resolve().parent.parent))
from _common import cpu, record

from tests.api_server import free_port, wait_for_http

KEY = "bench-key"
STREAM_KEY = "bench-stream-key"


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def q(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3)

    return {"n": len(values), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": round(ordered[-1], 3)}


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss_peak(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class Processes:
    """Child processes with their logs; all stopped on exit."""

    def __init__(self, folder: Path, env: dict):
        self.folder, self.env, self.children = folder, env, {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("w")
        command = [sys.executable, "-m", "bankanom_pipeline.cli", *args]
        self.children[name] = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self.children[name]

    def stop(self) -> None:
        for process in self.children.values():
            process.terminate()
        for process in self.children.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


class Truth(threading.Thread):
    """Every emitted line, its emit time and its ground truth, read from the mock server's stream
    (``mock_url``; None: lines are given to ``take``, e.g. a kept run's landing files, ``landed_truth``)."""

    def __init__(self, mock_url: str | None):
        super().__init__(daemon=True)
        self.source = None
        if mock_url is not None:
            from bankanom_pipeline.live.sources import MockSource

            self.source = MockSource(mock_url)
            self.source.resume(None)
        self.emitted: dict[str, float] = {}
        self.emit_delay: list[float] = []  # emitted_at - the event's own timestamp: the mock server's lag
        self.instance: dict[str, str] = {}  # event_id -> anomaly instance id
        self.scenario: dict[str, str] = {}  # instance id -> its scenario ("BANK-013 DDoS Attack")
        self.event_ts: dict[str, float] = {}  # event_id -> its own timestamp (epoch s), instances' events
        self.stop_event = threading.Event()

    def take(self, line: dict, emitted_at: float | None) -> None:
        event_id = line["event_id"]
        if emitted_at is not None:
            self.emitted[event_id] = emitted_at
            if len(self.emitted) % 50 == 0:
                self.emit_delay.append(emitted_at - _epoch(line["timestamp"]))
        details = line.get("anomaly_details") or {}
        if details.get("is_anomaly") and details.get("instance_id"):
            self.instance[event_id] = details["instance_id"]
            self.event_ts[event_id] = _epoch(line["timestamp"])
            name = re.sub(r"\s*\(#\d+\)$", "", details.get("anomaly_name") or "")
            self.scenario.setdefault(details["instance_id"], f"{details.get('anomaly_id')} {name}")

    def run(self) -> None:
        while not self.stop_event.is_set():
            for item in self.source.fetch(5000, 0.2):
                self.take(json.loads(item.line), item.emitted_at)


def landed_truth(run: Path) -> Truth:
    """The ground truth of a kept run folder, from its landing files (the lines the mock server emitted;
    no emit times)."""
    truth = Truth(None)
    for path in sorted((run / "landing" / "logs").glob("*/*.jsonl")):
        with path.open() as lines:
            for line in lines:
                truth.take(json.loads(line), None)
    return truth


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).replace(tzinfo=dt.UTC).timestamp()


WIDE_EVERY, WIDE_WINDOW_S = 5, 6.0


class Visibility(threading.Thread):
    """First poll at which each event is listed by /scores/latest, and each anomaly's incident by /incidents."""

    def __init__(self, api_url: str, poll: float, window_s: float = 5.0):
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=api_url, headers={"X-API-Key": KEY}, timeout=10)
        self.incident_client = httpx.Client(base_url=api_url, headers={"X-API-Key": KEY}, timeout=10)
        self.poll, self.window_s = poll, window_s
        self.polls = 0
        self.seen_by_wide_poll = (
            0  # first listed by a wide poll, behind the narrow window: timed up to 1 s late
        )
        self.seen: dict[str, float] = {}
        self.flagged: set[str] = set()
        self.newest_ts: float | None = None
        self.incident_seen: dict[str, float] = {}  # event_id -> first poll listing an incident holding it
        self.incident_counts: dict[str, int] = {}
        self.errors = 0
        self.unseen_before_sweep = 0
        # each poll's response time (s): the API's share of the latency, and a stall on its side
        self.poll_s: list[float] = []
        self.incident_poll_s: list[float] = []
        self.stop_event = threading.Event()

    def _scores(self, since_s: float | None = None) -> None:
        """Page through the events from a little before the newest one seen (so a poll reads the few
        thousand new rows, not the run's), or from ``since_s``."""
        wide, narrow_since = False, None
        if since_s is None:
            # every WIDE_EVERY-th poll reads WIDE_WINDOW_S back: the mock server emits some lines seconds
            # after their timestamp (its emit delay, up to ~3 s on a loaded machine), behind the window
            self.polls += 1
            wide = self.polls % WIDE_EVERY == 0
            narrow_since = (self.newest_ts or time.time()) - self.window_s
            since_s = narrow_since - (max(0.0, WIDE_WINDOW_S - self.window_s) if wide else 0.0)
        since = dt.datetime.fromtimestamp(since_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        offset = 0
        while True:
            asked = time.perf_counter()
            page = self.client.get("/scores/latest", params={"since": since, "limit": 1000, "offset": offset})
            self.poll_s.append(time.perf_counter() - asked)
            page.raise_for_status()
            body = page.json()
            now = time.time()
            for row in body["items"]:
                ts = _epoch(row["ts"])
                if row["event_id"] not in self.seen:
                    self.seen[row["event_id"]] = now
                    self.seen_by_wide_poll += wide and ts < narrow_since
                if row.get("is_anomaly"):
                    self.flagged.add(row["event_id"])
                if self.newest_ts is None or ts > self.newest_ts:
                    self.newest_ts = ts
            offset += len(body["items"])
            if not body["items"] or offset >= body["total"]:
                return

    def _incidents(self) -> None:
        asked = time.perf_counter()
        page = self.incident_client.get("/incidents", params={"limit": 200})
        self.incident_poll_s.append(time.perf_counter() - asked)
        page.raise_for_status()
        for incident in page.json()["items"]:
            known = self.incident_counts.get(incident["incident_id"])
            # the detail lists an incident's first 100 events by time: once read past 100, a new read
            # shows the same ones (events joining later are measured from the store, ``measure``)
            if known == incident["event_count"] or (known is not None and known >= 100):
                continue
            detail = self.incident_client.get(f"/incidents/{incident['incident_id']}")
            if detail.status_code != 200:
                continue
            now = time.time()
            self.incident_counts[incident["incident_id"]] = incident["event_count"]
            for event in detail.json()["events"]:
                self.incident_seen.setdefault(event["event_id"], now)

    def _loop(self, poll_once, every: float) -> None:
        while not self.stop_event.is_set():
            began = time.time()
            try:
                poll_once()
            except httpx.HTTPError:
                self.errors += 1
            self.stop_event.wait(max(0.0, every - (time.time() - began)))

    def run(self) -> None:
        # two loops, so that reading a changed incident's events never delays the next scores poll
        # incidents once a second: their target is 10 s, and on two cores the API's work for polls shares
        # the machine with the stream it measures (GET /incidents costs ~0.1 s of the API's CPU)
        incidents = threading.Thread(
            target=self._loop, args=(self._incidents, max(1.0, self.poll)), daemon=True
        )
        incidents.start()
        self._loop(self._scores, self.poll)
        incidents.join()


def wait_for_stream(url: str, process: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    """The stream answers /status (with its key) once its state is restored and it consumes."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/status", headers={"X-Stream-Key": STREAM_KEY}, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the stream did not come up:\n{log.read_text()[-3000:]}")


def flat_config(path: Path, rate: float) -> Path:
    """The mock configuration (``$BANKANOM_MOCK_CONFIG`` or the packaged one) at ``rate`` events/s with
    flat traffic, written to ``path`` for ``mock-server --config``: no daily or weekly seasonality and no
    bursts, so the server emits ``rate`` events/s at any time of day (anomalies included: the
    scenarios' events are ``global_anomaly_rate`` of the total)."""
    from bankanom_pipeline import settings
    from bankanom_pipeline.generator.config import load_config

    cfg = load_config(settings.mock_config_path())
    cfg = cfg.model_copy(
        update={
            "seasonality": cfg.seasonality.model_copy(update={"daily_amplitude": 0.0, "weekend_factor": 1.0}),
            "log_generation": cfg.log_generation.model_copy(
                update={"logs_per_second": rate, "burst_simulation": False}
            ),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    load_config(path)  # what the server will read: validated here, not at its start
    return path


def per_minute(times: list[float], start: float) -> list[float]:
    """Events per second in each whole minute from ``start`` (a last partial minute is left out)."""
    if not times:
        return []
    counts = [0] * (int((max(times) - start) // 60) + 1)
    for t in times:
        if t >= start:
            counts[int((t - start) // 60)] += 1
    whole = int((max(times) - start) // 60)
    return [round(c / 60, 1) for c in counts[:whole]]


def live_run(
    data_dir: Path,
    work: Path,
    rate: float,
    seconds: float,
    poll: float,
    window: float,
    mock_config: Path | None = None,
) -> dict:
    """One measured run of the live loop at ``rate`` events/s for ``seconds``; the mock server reads
    ``mock_config`` (None: its default). ``work`` starts empty: a live store kept there by an earlier
    run would be resumed, and its events counted in this one's."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {
        **os.environ,
        "BANKANOM_HOME": str(work),
        "BANKANOM_DATA_DIR": str(data_dir),
        "BANKANOM_LANDING_DIR": str(work / "landing"),
        "BANKANOM_LIVE_DIR": str(work / "live"),
        "BANKANOM_API_KEYS": KEY,
        "BANKANOM_STREAM_KEY": STREAM_KEY,
        "BANKANOM_API_RELOAD_SECONDS": "1",
    }
    mock_port, stream_port, api_port = free_port(), free_port(), free_port()
    env["BANKANOM_STREAM_URL"] = f"http://127.0.0.1:{stream_port}"
    mock_url, api_url = f"http://127.0.0.1:{mock_port}", f"http://127.0.0.1:{api_port}"
    procs = Processes(work, env)
    try:
        config_args = ["--config", str(mock_config)] if mock_config is not None else []
        mock = procs.start("mock-server", "mock-server", "--port", str(mock_port), *config_args)
        wait_for_http(f"{mock_url}/health", mock, work / "mock-server.log", timeout=120)
        stream = procs.start("stream", "stream", "--source", f"mock:{mock_url}", "--port", str(stream_port))
        wait_for_stream(env["BANKANOM_STREAM_URL"], stream, work / "stream.log")
        api = procs.start("api", "api", "--port", str(api_port))
        wait_for_http(f"{api_url}/health", api, work / "api.log", timeout=120)
        truth, visible = Truth(mock_url), Visibility(api_url, poll, window)
        truth.start()
        visible.start()
        cpu_before, cpu_wall_before = process_cpu(stream.pid), time.time()
        api_cpu_before = process_cpu(api.pid)
        started = time.time()
        httpx.post(
            f"{mock_url}/control", json={"action": "start", "logs_per_second": rate}
        ).raise_for_status()
        time.sleep(seconds)
        httpx.post(f"{mock_url}/control", json={"action": "stop"}).raise_for_status()
        drained = time.time() + 60
        while time.time() < drained and not set(truth.emitted) <= set(visible.seen):
            time.sleep(0.5)
        time.sleep(2 * poll + 1)  # incidents of the last events
        cpu_after, cpu_wall_after = process_cpu(stream.pid), time.time()
        api_cpu_s = process_cpu(api.pid) - api_cpu_before
        rss = process_rss_peak(stream.pid)
        truth.stop_event.set()
        visible.stop_event.set()
        truth.join(5)
        visible.join(15)
        # events listed only outside the polled window (late ones) count as seen now, a conservative time:
        # read from a second before the oldest unseen one
        unseen = [truth.emitted[e] for e in set(truth.emitted) - set(visible.seen)]
        visible.unseen_before_sweep = len(unseen)
        if unseen:
            visible._scores(since_s=min(unseen) - 1 - max(truth.emit_delay, default=0.0) - 5)
        status = httpx.get(
            f"{env['BANKANOM_STREAM_URL']}/status", headers={"X-Stream-Key": STREAM_KEY}, timeout=10
        ).json()
    finally:
        procs.stop()
    cpu_s, wall = cpu_after - cpu_before, cpu_wall_after - cpu_wall_before
    measured = measure(truth, visible, work / "live" / "live.sqlite", cpu_s, wall, rss, status, started)
    # the API answering the polls shares the two cores with the stream it measures
    measured["api_cpu_share_of_a_core"] = round(api_cpu_s / max(1e-9, wall), 3)
    return measured


TAIL_S = 10.0  # issue 25's target for first flagged event -> open incident


def incident_latency(
    emitted: dict[str, float],
    instance: dict[str, str],
    scenario: dict[str, str],
    flagged: set[str],
    seen: dict[str, float],
    incident_seen: dict[str, float],
    in_incident: set[str],
    scored_at: dict[str, float],
) -> dict:
    """Per anomaly instance, from its first flagged event's emit time (and from its first event's) to
    the first sighting of an incident holding one of its events: per event the earlier of its detail
    read (``incident_seen``) and, when the store holds its membership at the end (``in_incident``), the
    first ``/scores/latest`` poll listing it (``seen``). Instances slower than ``TAIL_S`` are broken down
    by scenario, with what timed them and the stream's own share (``scored_at`` minus emit time of the
    first flagged event, from the store)."""
    first_flagged: dict[str, tuple[float, str]] = {}
    first_event: dict[str, float] = {}
    opened: dict[str, tuple[float, str]] = {}  # instance -> (time, "detail" | "membership")
    size: dict[str, int] = {}
    flagged_count: dict[str, int] = {}
    detail_late = []  # detail read after the membership sighting: by how much
    for event_id, inst in instance.items():
        t = emitted[event_id]
        size[inst] = size.get(inst, 0) + 1
        first_event[inst] = min(t, first_event.get(inst, t))
        if event_id in flagged:
            flagged_count[inst] = flagged_count.get(inst, 0) + 1
            if inst not in first_flagged or (t, event_id) < first_flagged[inst]:
                first_flagged[inst] = (t, event_id)
        sightings = []
        if event_id in incident_seen:
            sightings.append((incident_seen[event_id], "detail"))
        if event_id in in_incident and event_id in seen:
            sightings.append((seen[event_id], "membership"))
            if event_id in incident_seen:
                detail_late.append(incident_seen[event_id] - seen[event_id])
        if sightings:
            opened[inst] = min([*sightings, opened.get(inst, (float("inf"), ""))])
    from_flagged = {i: opened[i][0] - first_flagged[i][0] for i in opened if i in first_flagged}
    slow = sorted((i for i, v in from_flagged.items() if v > TAIL_S), key=lambda i: -from_flagged[i])
    by_scenario: dict[str, dict] = {}
    in_incidents = {}
    for inst in opened:
        name = scenario.get(inst, "?")
        in_incidents[name] = in_incidents.get(name, 0) + 1
    for inst in slow:
        name = scenario.get(inst, "?")
        row = by_scenario.setdefault(
            name, {"slow": 0, "of": in_incidents[name], "latency_s": [], "events": [], "timed_by": {}}
        )
        row["slow"] += 1
        row["latency_s"].append(from_flagged[inst])
        row["events"].append(size[inst])
        row["timed_by"][opened[inst][1]] = row["timed_by"].get(opened[inst][1], 0) + 1
    for row in by_scenario.values():
        row["latency_s"], row["events"] = percentiles(row["latency_s"]), percentiles(row["events"])

    def stream_share(inst: str) -> float | None:
        t, event_id = first_flagged[inst]
        return round(scored_at[event_id] - t, 3) if event_id in scored_at else None

    late = [d for d in detail_late if d > TAIL_S]
    return {
        "from_flagged": list(from_flagged.values()),
        "from_first": [opened[i][0] - first_event[i] for i in opened],
        "in_incidents": len(opened),
        "by_membership": sum(1 for v in opened.values() if v[1] == "membership"),
        "tail": {
            "over_s": TAIL_S,
            "instances": len(slow),
            # the stream writes a flagged event's membership in the commit that scores it: not 0 here
            # would mean an incident waited for a later event
            "first_flagged_not_in_incident": sum(
                1 for i in first_flagged if first_flagged[i][1] not in in_incident
            ),
            # the stream's share of every instance: its first flagged event's commit minus its emit time
            "stream_s": percentiles([v for v in map(stream_share, from_flagged) if v is not None]),
            "by_scenario": dict(sorted(by_scenario.items(), key=lambda kv: -kv[1]["slow"])),
            "slowest": [
                {
                    "instance": inst,
                    "scenario": scenario.get(inst, "?"),
                    "latency_s": round(from_flagged[inst], 3),
                    "timed_by": opened[inst][1],
                    "events": size[inst],
                    "flagged": flagged_count.get(inst, 0),
                    "first_event_to_first_flagged_s": round(first_flagged[inst][0] - first_event[inst], 3),
                    "stream_s": stream_share(inst),
                }
                for inst in slow[:5]
            ],
            # events a detail read listed only well after their membership was visible (timed by the
            # earlier sighting): the bench's matching before, not the stream
            "detail_read_later_than_membership": {"events": len(late), **percentiles(late)},
        },
    }


def detection_delay(truth: Truth, flagged: set[str]) -> dict:
    """Per scenario, each anomaly instance's detection time in event time: its first line's timestamp ->
    its first flagged event's (``flagged``: the store's ``is_anomaly``), p50/p90/p99/max and the share over
    ``TAIL_S``; instances with no flagged event are counted apart (``undetected``). This is the part of
    ``incident_latency_from_first_event_s`` that is not delivery: lines that look normal are not flagged,
    live or batch."""
    first: dict[str, float] = {}
    first_flagged: dict[str, float] = {}
    for event_id, inst in truth.instance.items():
        t = truth.event_ts[event_id]
        first[inst] = min(t, first.get(inst, t))
        if event_id in flagged:
            first_flagged[inst] = min(t, first_flagged.get(inst, t))
    delays: dict[str, list[float]] = {}
    undetected: dict[str, int] = {}
    for inst, t in first.items():
        name = truth.scenario.get(inst, "?")
        if inst in first_flagged:
            delays.setdefault(name, []).append(first_flagged[inst] - t)
        else:
            undetected[name] = undetected.get(name, 0) + 1

    def row(values: list[float], missed: int) -> dict:
        over = sum(v > TAIL_S for v in values)
        return {**percentiles(values), "over_s_share": round(over / len(values), 3) if values else None,
                "undetected": missed}  # fmt: skip

    by_scenario = {
        name: row(delays.get(name, []), undetected.get(name, 0)) for name in set(delays) | set(undetected)
    }
    return {
        "over_s": TAIL_S,
        "all": row([v for values in delays.values() for v in values], sum(undetected.values())),
        # slowest first
        "by_scenario": dict(sorted(by_scenario.items(), key=lambda kv: (-kv[1].get("p99", -1), kv[0]))),
    }


def kept_detection_delay(run: Path) -> dict:
    """``detection_delay`` of a kept run folder: its landing files' truth, its store's flags."""
    con = sqlite3.connect(f"file:{run / 'live' / 'live.sqlite'}?mode=ro", uri=True)
    flagged = {r[0] for r in con.execute("SELECT event_id FROM events WHERE is_anomaly = 1")}
    con.close()
    return detection_delay(landed_truth(run), flagged)


def measure(
    truth: Truth,
    visible: Visibility,
    store: Path,
    cpu_s: float,
    seconds: float,
    rss: int,
    status: dict,
    started: float,
) -> dict:
    emitted = truth.emitted
    latency = [visible.seen[e] - t for e, t in emitted.items() if e in visible.seen]
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    stored = con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone()
    refused = con.execute("SELECT count(*) FROM refused").fetchone()[0]
    stored_ids = {r[0] for r in con.execute("SELECT event_id FROM events")}
    in_incident = {r[0] for r in con.execute("SELECT event_id FROM incident_events")}
    scored_at = dict(con.execute("SELECT event_id, scored_at FROM events WHERE is_anomaly = 1").fetchall())
    con.close()
    incidents = incident_latency(
        emitted, truth.instance, truth.scenario, visible.flagged, visible.seen, visible.incident_seen,
        in_incident, scored_at,
    )  # fmt: skip
    return {
        "emitted": len(emitted),
        "emitted_per_s": round(len(emitted) / max(1e-9, max(emitted.values()) - min(emitted.values())), 1)
        if emitted
        else 0.0,
        "emitted_per_s_each_minute": per_minute(list(emitted.values()), started),
        "mock_emit_delay_s": percentiles(truth.emit_delay),
        "visible": len(latency),
        "never_visible": len(set(emitted) - set(visible.seen)),
        # listed only outside the polled windows (the newest seen minus --window, every WIDE_EVERY-th
        # poll minus WIDE_WINDOW_S): their time is the final sweep's, an overestimate
        "seen_only_in_final_sweep": visible.unseen_before_sweep,
        "seen_first_by_a_wide_poll": visible.seen_by_wide_poll,
        "event_latency_s": percentiles(latency),
        "stored_rows": stored[0],
        "stored_twice": stored[0] - stored[1],
        "missing_from_store": len(set(emitted) - stored_ids),
        "refused": refused,
        "reconciled": len(emitted) == stored[0] + refused,
        "instances": len(set(truth.instance.values())),
        "instances_in_incidents": incidents["in_incidents"],
        "instances_timed_by_membership": incidents["by_membership"],
        "incident_latency_from_first_flagged_s": percentiles(incidents["from_flagged"]),
        "incident_latency_from_first_event_s": percentiles(incidents["from_first"]),
        "incident_tail": incidents["tail"],
        # first line -> first flagged event, in event time: the detection part of the latency above
        "detection_delay": detection_delay(truth, set(scored_at)),
        "stream_cpu_s": round(cpu_s, 2),
        "stream_cpu_s_per_1000_events": round(1000 * cpu_s / max(1, len(emitted)), 3),
        "stream_cpu_share_of_a_core": round(cpu_s / max(1e-9, seconds), 3),
        "stream_peak_rss_mib": round(rss / 2**20, 1),
        "poll_errors": visible.errors,
        "scores_page_response_s": percentiles(visible.poll_s),
        "incidents_list_response_s": percentiles(visible.incident_poll_s),
        "load_average": list(os.getloadavg()),
        "stream_status": status,
    }


def yardstick(before: str, data_dir: Path, work: Path, seconds: float) -> dict:
    """The loop before issue 25 at ``before``: ``bankanom up`` (landing sensor → the day's pipeline_job per
    file), sampled every 5 s: how far the newest event in /scores/latest trails the clock."""
    tree = Path(f"/tmp/e/live-{before}")
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), before], check=True)
    home = work / "before"
    shutil.copytree(data_dir, home / "data", dirs_exist_ok=True)
    # the demo's own files are already loaded; before issue 25 the landing sensor did not know that and
    # re-ran those days first (minutes): without them the loop is measured in its steady state, on the
    # mock server's live files only
    shutil.rmtree(home / "data" / "landing", ignore_errors=True)
    api_port, mock_port, ui_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "BANKANOM_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster_home"),
        "BANKANOM_API_KEYS": KEY,
    }
    (home / "dagster_home").mkdir(parents=True, exist_ok=True)
    log = (home / "up.log").open("w")
    up = subprocess.Popen(
        [sys.executable, "-m", "bankanom_pipeline.cli", "up", "--ui-port", str(ui_port), "--mock-port",
         str(mock_port), "--api-port", str(api_port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home,
    )  # fmt: skip
    samples = []
    try:
        wait_for_http(f"http://127.0.0.1:{api_port}/health", up, home / "up.log", timeout=180)
        client = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", headers={"X-API-Key": KEY}, timeout=10)
        began = time.time()
        while time.time() - began < seconds:
            try:
                items = client.get("/scores/latest", params={"limit": 1}).json().get("items", [])
            except (httpx.HTTPError, ValueError):
                items = []
            if items:
                newest = time.mktime(time.strptime(items[0]["ts"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
                samples.append(round(time.time() - newest, 1))
            time.sleep(5)
    finally:
        up.terminate()
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
    return {"commit": before, "seconds": seconds, "lag_samples_s": samples, "lag_s": percentiles(samples)}


RATE_DAYS = ("2026-01-05", "2026-01-06")  # the training day and the day whose run publishes a snapshot

_GENERATE = """
import datetime as dt, sys
from bankanom_pipeline import settings
from bankanom_pipeline.generator.config import load_config
from bankanom_pipeline.generator.engine import Generator
from bankanom_pipeline.generator.writer import write_range
path, rate, offset, days = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
cfg = load_config(path or settings.mock_config_path())
cfg = cfg.model_copy(update={
    "log_generation": cfg.log_generation.model_copy(update={"logs_per_second": rate}),
    "population": cfg.population.model_copy(update={"seed": cfg.customer_seed}),
})
for day, seconds, seed in zip(days[::2], days[1::2], (cfg.seed, cfg.seed + 1)):
    start = int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp()) + offset
    done = write_range(Generator(cfg.model_copy(update={"seed": seed})), settings.landing_dir() / "logs",
                       start, end_s=start + int(seconds))
    print(day, done.events, "events", done.anomalous, "anomalous", flush=True)
"""


def rate_models_data(
    folder: Path, rate: float, minutes: float, start: dt.time | None = None, mock_config: Path | None = None
) -> Path:
    """A data folder whose promoted models were trained on ``minutes`` of the mock traffic at ``rate``
    events/s, what ``bankanom demo`` does for whole days: generated with the mock configuration at that
    rate (``mock_config``, the run's: None for the default; the same customers on both days, other
    seeds), features and training on the first window,
    the daily pipeline on a 5-minute window of the next day (it only publishes the snapshot and the
    engine checkpoint the stream starts from; the stream's events are months later, so the checkpoint's
    state has aged out by then, as the default demo's has). The windows begin at the current UTC time of
    day, so with the configuration's seasonality they have the rate the mock server emits during the run. A full day at 1,000 events/s
    (86 M events) is far beyond what the 2-core machine trains in a bench; ``minutes`` of it hold as
    many events as a default day does in about 20 minutes. ``start``: the time of day the windows begin
    at instead, for models built ahead of a run that starts then."""
    built = folder / "built"
    if built.exists():
        return folder / "data"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = {**os.environ, "BANKANOM_DATA_DIR": str(folder / "data"), "DAGSTER_HOME": str(folder / "dh")}
    env.pop("BANKANOM_LANDING_DIR", None)
    (folder / "dh").mkdir()
    begin = start or dt.datetime.now(dt.UTC).time()
    offset = begin.hour * 3600 + begin.minute * 60
    offset = min(offset, 86_400 - int(minutes * 60))  # both windows inside their day
    train_day, run_day = RATE_DAYS
    cli = [sys.executable, "-m", "bankanom_pipeline.cli"]
    steps = [
        [
            sys.executable,
            "-c",
            _GENERATE,
            str(mock_config or ""),
            str(rate),
            str(offset),
            train_day,
            str(int(minutes * 60)),
            run_day,
            "300",
        ],
        [*cli, "run", "--job", "features_job", "--date", train_day],
        [*cli, "train", "--end-date", train_day],
        [*cli, "run", "--date", run_day],
    ]
    with open(folder / "build.log", "w") as log:
        for step in steps:
            shown = ["generate", *step[4:]] if step[1] == "-c" else step[3:]
            log.write(f"$ {' '.join(shown)}\n")
            log.flush()
            subprocess.run(step, env=env, check=True, stdout=log, stderr=subprocess.STDOUT)
    built.touch()
    return folder / "data"


# settings that would send the batch run elsewhere than the copy (another warehouse, lake mode, Celery)
_BATCH_FOREIGN = (
    "BANKANOM_HOME",
    "BANKANOM_WAREHOUSE",
    "BANKANOM_MODELS_DIR",
    "BANKANOM_SNAPSHOTS_DIR",
    "BANKANOM_PUBLISHED_DIR",
    "BANKANOM_ALERTS_DB",
    "BANKANOM_FEEDBACK_DB",
    "BANKANOM_STORAGE",
    "BANKANOM_LAKE_ROOT",
    "BANKANOM_EXECUTOR",
)
# what the batch needs of the run's data folder: the warehouse it appends the day to and the promoted
# models (its landing files, published Parquet and snapshots are left behind: the run's landing is read)
_BATCH_COPY = ("warehouse.duckdb", "warehouse.duckdb.wal", "models", "alerts.duckdb")


def _lines(folder: Path) -> int:
    count = 0
    for path in sorted(folder.glob("*.jsonl")):
        with path.open("rb") as f:
            count += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b""))
    return count


def bankanom_niced(env: dict, *args: str) -> tuple[int, str]:
    """``bankanom *args`` in a process of its own under ``env``, at the lowest priority (a day's batch
    run beside a measured process); its exit code and what it printed."""
    done = subprocess.run(
        ["nice", "-n", "19", sys.executable, "-m", "bankanom_pipeline.cli", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=env["BANKANOM_HOME"],
    )  # fmt: skip
    return done.returncode, done.stdout.decode(errors="replace")


def batch_reconcile(
    run: Path, data_dir: Path, scratch: Path, keep_copy: bool = False, cli=bankanom_niced
) -> dict:
    """Issue 25's "counts reconciled against the day's batch run" for a live run's folder ``run`` (its
    ``landing/logs/<day>/*.jsonl``, the mock server's landing files, and ``live/live.sqlite``, the
    stream's store): ``bankanom run --date <day>`` (pipeline_job, the CLI's way of running a day) on a
    copy under ``scratch`` of ``data_dir``'s warehouse and promoted models, the models the stream scored
    with, fed the run's landing files; then ``reconcile_day`` of the live store against that warehouse,
    per day, in day order (a run crossing midnight has its first day as the second's previous one).

    The run's live store is read, never written (the evaluation asset reconciles it too: its log line is
    kept beside). Beside the figures: the landing files' lines (what the mock server emitted), the
    batch's raw, quarantined and rejected rows, the previous day's raw rows in the warehouse before the
    run (the lookback models read up to a day back; 0 here is what the live state had too), the model
    versions each side scored with, and the run's wall time and load average. ``cli(env, *args)`` runs
    the CLI (default: a process of its own, niced; the test runs it in its own process with
    tests/tiny_platform.py's ``bankanom``)."""
    import duckdb

    from bankanom_pipeline.live.reconcile import STORE_FILE, reconcile_day

    store = run / "live" / STORE_FILE
    logs = run / "landing" / "logs"
    days = (
        sorted(p.name for p in logs.iterdir() if p.is_dir() and any(p.glob("*.jsonl")))
        if logs.is_dir()
        else []
    )
    if not store.is_file() or not days:
        raise ValueError(f"{run} holds no live store ({store}) or no landing day under {logs}")
    if not (data_dir / "warehouse.duckdb").is_file() or not (data_dir / "models" / "current.json").is_file():
        raise ValueError(f"{data_dir} is not a data folder with a warehouse and promoted models")
    shutil.rmtree(scratch, ignore_errors=True)
    data = scratch / "data"
    data.mkdir(parents=True)
    for name in _BATCH_COPY:
        source = data_dir / name
        if source.is_dir():
            shutil.copytree(source, data / name)
        elif source.is_file():
            shutil.copy2(source, data / name)
    env = {k: v for k, v in os.environ.items() if k not in _BATCH_FOREIGN} | {
        "BANKANOM_HOME": str(scratch),
        "BANKANOM_DATA_DIR": str(data),
        "BANKANOM_LANDING_DIR": str(run / "landing"),
        "BANKANOM_LIVE_DIR": str(run / "live"),
        "DAGSTER_HOME": str(scratch / "dagster_home"),
        "PYTHONUNBUFFERED": "1",
    }
    promoted = json.loads((data / "models" / "current.json").read_text())
    live = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        live_versions = dict(
            live.execute("SELECT model_versions, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC").fetchall()
        )
    finally:
        live.close()
    out: dict = {
        "run": str(run),
        "data_dir": str(data_dir),
        "promoted_models": promoted,
        "live_model_versions": live_versions,
        "days": {},
    }
    for day in days:
        previous = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
        with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as con:
            previous_rows = con.execute(
                "SELECT count(*) FROM raw_logs WHERE partition_date = ?", [previous]
            ).fetchone()[0]
        log = scratch / f"batch-{day}.log"
        began = time.time()
        code, text = cli(env, "run", "--date", day)
        took = time.time() - began
        log.write_text(text)
        if code != 0:
            raise RuntimeError(f"the batch run of {day} failed ({log}):\n{text[-3000:]}")
        with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as con:
            report = reconcile_day(store, con, day)
            counts = {
                table: con.execute(
                    f"SELECT count(*) FROM {table} WHERE partition_date = ?", [day]
                ).fetchone()[0]
                for table in ("raw_logs", "raw_logs_rejected", "quarantine_logs", "scored_events")
            }
            batch_versions = dict(
                con.execute(
                    "SELECT if_version || ' ' || lof_version, count(*) FROM scored_events "
                    "WHERE partition_date = ? GROUP BY 1",
                    [day],
                ).fetchall()
            )
        figures = report.as_dict() if report is not None else None
        out["days"][day] = {
            "landing_lines": _lines(logs / day),
            "previous_day": previous,
            "previous_day_raw_rows_before": previous_rows,
            "batch_rows": counts,
            "batch_model_versions": batch_versions,
            "batch_run_s": round(took, 1),
            "load_average_after": list(os.getloadavg()),
            # the evaluation asset's own reconciliation in the run (the project's path), as it logged it
            "evaluation_log": [line.strip() for line in text.splitlines() if "live vs batch" in line][-1:],
            "reconciliation": figures,
            "agrees": bool(
                figures
                and figures["live_events"] == figures["batch_events"] == figures["both"]
                and figures["scores_equal"] == figures["compared"] == figures["both"]
                and figures["flags_agree"] == figures["both"]
                and figures["missed"] == figures["extra"] == 0
            ),
        }
    if not keep_copy:
        shutil.rmtree(data, ignore_errors=True)  # the warehouse copy: ~1 GB for a demo's
    return out


def reconcile_only(runs: list[Path], data_dirs: list[Path] | None, keep: Path | None) -> None:
    """``--reconcile-only``: ``batch_reconcile`` of kept run folders, each with its data folder, and each
    run's ``detection_delay``."""
    data_dirs = data_dirs or []
    if len(data_dirs) not in (1, len(runs)):
        raise SystemExit("--reconcile-only: give one --data-dir, or one per run folder, in the same order")
    scratch = keep or Path(tempfile.mkdtemp(prefix="live-batch-"))
    result = {}
    for i, run in enumerate(runs):
        data_dir = data_dirs[0] if len(data_dirs) == 1 else data_dirs[i]
        result[str(run)] = {
            **batch_reconcile(run, data_dir, scratch / f"batch-{run.name}"),
            "detection_delay": kept_detection_delay(run),
        }
        print(json.dumps({str(run): result[str(run)]}, indent=2), flush=True)
    record("live_bench_reconcile", {"runs": result})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir", type=Path, action="append",
        help="a demo's data folder (promoted models, a snapshot); with --reconcile-only, one per run folder",
    )  # fmt: skip
    parser.add_argument("--rates", default="default,1000", help="events/s per run; 'default' = the config's")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument(
        "--window", type=float, default=2.0,
        help="each /scores/latest poll reads from the newest event seen minus this many seconds",
    )  # fmt: skip
    parser.add_argument(
        "--rate-models", action="store_true",
        help="also run each rate other than the default with models trained on traffic at that rate",
    )  # fmt: skip
    parser.add_argument("--rate-minutes", type=float, default=20.0, help="the window those models train on")
    parser.add_argument(
        "--rate-start", type=dt.time.fromisoformat,
        help="UTC time of day (HH:MM) the rate models' windows begin at (default: now); to build them ahead",
    )  # fmt: skip
    parser.add_argument(
        "--seasonal", action="store_true",
        help="keep the mock configuration's seasonality and bursts at every rate (by default a rate other "
        "than 'default' runs with flat traffic, so that the rate asked is the rate emitted)",
    )  # fmt: skip
    parser.add_argument("--before", default="8d39679", help="the commit of the yardstick loop")
    parser.add_argument("--yardstick-seconds", type=float, default=600)
    parser.add_argument("--no-yardstick", action="store_true")
    parser.add_argument("--keep", type=Path, help="keep the work folders here")
    parser.add_argument(
        "--batch-reconcile", action="store_true",
        help="after each run, run the day's batch (pipeline_job) on a copy of the run's models and "
        "warehouse fed the run's landing files, and report reconcile_day's figures (batch_reconcile)",
    )  # fmt: skip
    parser.add_argument(
        "--reconcile-only", type=Path, action="append", metavar="RUN_FOLDER",
        help="no live run: batch_reconcile a kept run folder (rate-1000, ...) with the models of "
        "--data-dir, the data folder that run streamed with; repeatable (then give --data-dir as often)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.reconcile_only:
        reconcile_only(args.reconcile_only, args.data_dir, args.keep)
        return
    from bankanom_pipeline.generator.config import load_config

    default_rate = load_config().log_generation.logs_per_second
    work = args.keep or Path(tempfile.mkdtemp(prefix="live-bench-"))
    data_dir = args.data_dir[-1] if args.data_dir else None
    if data_dir is None:
        from api_bench import demo_data

        data_dir = demo_data(work / "demo", rate=default_rate)
    runs = {}
    for rate in args.rates.split(","):
        value = default_rate if rate == "default" else float(rate)
        flat = rate != "default" and not args.seasonal
        mock_config = flat_config(work / f"mock-flat-{value:g}.yaml", value) if flat else None
        traffic = "flat" if flat else "seasonal"
        sets = [("", data_dir, f"the demo's ({data_dir}), trained at {default_rate:g}/s with seasonality")]
        if args.rate_models and rate != "default":
            trained = rate_models_data(
                work / f"models-at-{value:g}-{traffic}", value, args.rate_minutes, args.rate_start,
                mock_config,
            )  # fmt: skip
            sets.append(
                (" rate-models", trained, f"rate models ({trained}), {traffic} traffic at {value:g}/s")
            )
        for tag, folder, models in sets:
            name, suffix = f"{value:g}/s{tag}", f"{value:g}{tag.replace(' ', '-')}"
            runs[name] = {
                "models": models,
                "traffic": traffic,
                **live_run(folder, work / f"rate-{suffix}", value, args.seconds, args.poll, args.window,
                           mock_config),
            }  # fmt: skip
            if args.batch_reconcile:
                runs[name]["batch"] = batch_reconcile(
                    work / f"rate-{suffix}", folder, work / f"batch-{suffix}"
                )
            print(json.dumps({name: runs[name]}, indent=2), flush=True)
    result = {
        "cpu": cpu(),
        "seconds": args.seconds,
        "poll_s": args.poll,
        "window_s": args.window,
        "rate_minutes": args.rate_minutes if args.rate_models else None,
        "runs": runs,
    }
    if not args.no_yardstick:
        result["yardstick"] = yardstick(args.before, data_dir, work, args.yardstick_seconds)
        print(json.dumps({"yardstick": result["yardstick"]}, indent=2), flush=True)
    record("live_bench", result)


if __name__ == "__main__":
    main()
