"""N synthetic transactions (default 1M, one delivery) through ingest -> validate -> features -> score,
against a straightforward pandas + scikit-learn implementation of the same steps (the predecessor's
approach) on the same file, scored by the same promoted models.

Generated once and the models trained once (untimed). Then each side runs ``--runs`` times, alternating,
each bankanom run on a fresh warehouse; medians per stage of wall and CPU seconds (the process's,
every thread). The pandas features are checked against the
SQL ones (max absolute difference per model feature), so the comparison is of the same work.
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

import numpy as np
import pandas as pd
import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from _common import record

DAY = "2026-02-01"


def _cpu() -> float:
    """CPU seconds of this process (every thread: DuckDB's and BLAS's too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Stages:
    """Wall and CPU seconds of consecutive stages: the machine may be shared, and CPU seconds are what
    another engineer's load changes least."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.began = self.mark = time.perf_counter()
        self.cpu_began = self.cpu_mark = _cpu()

    def done(self, stage: str) -> None:
        now, cpu = time.perf_counter(), _cpu()
        self.seconds[stage] = now - self.mark
        self.seconds[f"{stage}_cpu"] = cpu - self.cpu_mark
        self.mark, self.cpu_mark = now, cpu

    def total(self) -> dict[str, float]:
        self.seconds["total"] = time.perf_counter() - self.began
        self.seconds["total_cpu"] = _cpu() - self.cpu_began
        return self.seconds


def bankanom_run(root: Path, detectors) -> tuple[dict, pl.DataFrame]:
    from bankanom_pipeline.defs.validation.gx import GX
    from bankanom_pipeline.detection.partition_scoring import score_partition
    from bankanom_pipeline.detection.sources import TRANSACTIONS
    from bankanom_pipeline.sqlmodels.runner import Project
    from bankanom_pipeline.transactions.raw import load_partition
    from bankanom_pipeline.transactions.validation import validate_partition
    from bankanom_pipeline.warehouse.store import EmbeddedWarehouse

    database = root / "w.duckdb"
    database.unlink(missing_ok=True)
    con = EmbeddedWarehouse(database).connect()
    stages = Stages()
    load_partition(con, root / "landing", DAY)
    stages.done("ingest")
    validate_partition(con, DAY, GX)
    stages.done("validate")
    Project().materialize(con, "features_transactions", DAY)
    stages.done("features")
    # the scored_transactions asset's body (read, score, explain the flagged, write with the versions):
    # the same call in every tree bench/compare.py measures
    score_partition(con, TRANSACTIONS, DAY, detectors)
    stages.done("score")
    seconds = stages.total()
    features = con.execute("SELECT * FROM features_transactions").pl()
    con.close()
    return seconds, features


def _haversine(lat1, lon1, lat2, lon2):
    lat1, lon1, lat2, lon2 = map(np.radians, (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371 * np.arcsin(np.sqrt(a))


def pandas_features(df: pd.DataFrame, cities: pd.DataFrame) -> pd.DataFrame:
    """features_transactions.sql, written the way a pandas user would."""
    df = df.sort_values(["account_id", "ts", "transaction_id"], kind="mergesort").reset_index(drop=True)
    coords = cities.assign(key=cities["location"].str.lower()).set_index("key")[["lat", "lon"]]
    df = df.join(coords, on=df["location"].str.lower())
    g = df.groupby("account_id", sort=False)
    log_amount = np.log1p(df["amount"])
    df["log_amount"] = log_amount
    n_prev = g.cumcount()
    prev_sum = log_amount.groupby(df["account_id"]).cumsum() - log_amount
    prev_sq = (log_amount**2).groupby(df["account_id"]).cumsum() - log_amount**2
    mean = prev_sum / n_prev.replace(0, np.nan)
    var = (prev_sq - n_prev * mean**2) / (n_prev - 1).replace(0, np.nan)
    sd = np.sqrt(var.clip(lower=0)).fillna(0)
    out = pd.DataFrame({"transaction_id": df["transaction_id"]})
    out["log_amount"] = log_amount
    out["amount_z"] = np.where(n_prev >= 3, (log_amount - mean) / np.maximum(sd, 0.5), 0.0)
    prev_max = log_amount.groupby(df["account_id"]).cummax().groupby(df["account_id"]).shift()
    out["amount_over_max"] = np.where(n_prev >= 1, log_amount - prev_max, 0.0)
    is_debit = df["transaction_type"] == "Debit"
    debit_log = log_amount.where(is_debit, 0.0)
    n_debit = is_debit.astype(int).groupby(df["account_id"]).cumsum() - is_debit.astype(int)
    debit_sum = debit_log.groupby(df["account_id"]).cumsum() - debit_log
    debit_sq = (debit_log**2).groupby(df["account_id"]).cumsum() - debit_log**2
    safe_n = n_debit.replace(0, np.nan)
    debit_sd = np.sqrt(
        (debit_sq - debit_sum * debit_sum / safe_n).clip(lower=0) / (n_debit - 1).replace(0, np.nan)
    )
    out["debit_history_count"] = n_debit
    out["debit_log_mean"] = (debit_sum / safe_n).fillna(0)
    out["debit_log_sd"] = debit_sd.fillna(0)
    out["debit_amount_z"] = np.where(
        is_debit & (n_debit >= 3),
        (log_amount - debit_sum / safe_n) / np.maximum(debit_sd.fillna(0), 0.5),
        0.0,
    )
    secs = (df["ts"] - g["ts"].shift()).dt.total_seconds().fillna(30 * 86400)
    out["log_secs_since_prev"] = np.log1p(np.minimum(secs, 30 * 86400))
    debit = np.where(df["transaction_type"] == "Debit", df["amount"], 0.0)
    # positional values: Series keyed by the row number would be aligned to the time index (all NaN)
    timed = pd.DataFrame(
        {"account_id": df["account_id"].to_numpy(), "amount": df["amount"].to_numpy(), "debit": debit},
        index=pd.DatetimeIndex(df["ts"]),
    )
    hour = timed.groupby("account_id", sort=False).rolling("1h")
    day = timed.groupby("account_id", sort=False).rolling("24h")
    out["tx_1h"] = hour["amount"].count().to_numpy() - 1
    out["tx_24h"] = day["amount"].count().to_numpy() - 1
    amount_1h = hour["amount"].sum().to_numpy()
    debit_1h = hour["debit"].sum().to_numpy()
    out["amount_1h_vs_usual"] = np.where(n_prev >= 1, np.log1p(amount_1h) - mean, 0.0)
    for name, column in [
        ("new_device", "device_id"),
        ("new_ip", "ip_address"),
        ("new_merchant", "merchant_id"),
    ]:
        out[name] = ((df.groupby(["account_id", column], sort=False).cumcount() == 0) & (n_prev >= 1)).astype(
            int
        )
    first_location = df.groupby([df["account_id"], df["location"].str.lower()], sort=False).cumcount() == 0
    out["new_location"] = (first_location & (n_prev >= 1)).astype(int)
    channel_before = df.groupby(["account_id", "channel"], sort=False).cumcount()
    out["new_channel"] = ((channel_before == 0) & (n_prev >= 3)).astype(int)
    out["channel_share"] = (channel_before + 1 / 30) / (n_prev + 0.1)
    out["novelty"] = out["new_device"] + out["new_ip"] + out["new_location"]
    out["history_count"] = n_prev
    # earlier transactions of the account in each hour of the day, then those within two hours of this one
    hour_of_day = df["ts"].dt.hour.to_numpy()
    onehot = pd.DataFrame(np.eye(24, dtype=np.int32)[hour_of_day], index=df.index)
    before = onehot.groupby(df["account_id"], sort=False).cumsum().to_numpy() - onehot.to_numpy()
    near = sum(before[np.arange(len(df)), (hour_of_day + d) % 24] for d in range(-2, 3))
    out["hour_share"] = np.where(n_prev >= 5, near / n_prev.replace(0, 1), 1.0)
    out["hour_near_count"] = near
    km = pd.Series(_haversine(df["lat"], df["lon"], g["lat"].shift(), g["lon"].shift())).fillna(0)
    out["travel_km"] = km
    out["travel_speed_kmh"] = np.minimum(km / np.maximum(secs / 3600, 1 / 60), 20000)
    out["login_attempts"] = df["login_attempts"]
    out["log_duration"] = np.log1p(df["duration_s"])
    out["drain_share"] = np.where(
        df["transaction_type"] == "Debit", df["amount"] / np.maximum(df["balance"] + df["amount"], 1), 0.0
    )
    out["drain_share_1h"] = debit_1h / np.maximum(df["balance"] + debit_1h, 1)
    usual = out["drain_share"].groupby(df["account_id"]).cumsum() - out["drain_share"]
    out["drain_1h_over_usual"] = out["drain_share_1h"] - (usual / n_prev.replace(0, np.nan)).fillna(0)
    hours = df["ts"].dt.hour + df["ts"].dt.minute / 60
    out["hour_of_day"] = hours
    out["hour_sin"] = np.sin(2 * np.pi * hours / 24)
    out["hour_cos"] = np.cos(2 * np.pi * hours / 24)
    out["is_weekend"] = (df["ts"].dt.dayofweek >= 5).astype(int)
    out["is_credit"] = (df["transaction_type"] == "Credit").astype(int)
    return out


def pandas_run(csv: Path, cities: pd.DataFrame, detectors) -> tuple[dict, pd.DataFrame]:
    from bankanom_pipeline.detection.scoring import score
    from bankanom_pipeline.detection.sources import TRANSACTIONS

    stages = Stages()
    raw = pd.read_csv(csv, dtype=str, keep_default_na=False).rename(columns={"IP Address": "IPAddress"})
    stages.done("ingest")
    df = pd.DataFrame(
        {
            "transaction_id": raw["TransactionID"],
            "account_id": raw["AccountID"],
            "amount": pd.to_numeric(raw["TransactionAmount"], errors="coerce"),
            "ts": pd.to_datetime(raw["TransactionDate"], format="%Y-%m-%d %H:%M:%S", errors="coerce"),
            "transaction_type": raw["TransactionType"],
            "location": raw["Location"],
            "device_id": raw["DeviceID"],
            "ip_address": raw["IPAddress"],
            "merchant_id": raw["MerchantID"],
            "channel": raw["Channel"],
            "customer_age": pd.to_numeric(raw["CustomerAge"], errors="coerce"),
            "duration_s": pd.to_numeric(raw["TransactionDuration"], errors="coerce"),
            "login_attempts": pd.to_numeric(raw["LoginAttempts"], errors="coerce"),
            "balance": pd.to_numeric(raw["AccountBalance"], errors="coerce"),
        }
    )
    ok = (
        df.notna().all(axis=1)
        & (df["amount"] >= 0)
        & (df["balance"] >= 0)
        & df["customer_age"].between(18, 120)
        & df["transaction_type"].isin(["Debit", "Credit"])
        & df["channel"].isin(["ATM", "Online", "Branch"])
        & df["ip_address"].str.fullmatch(r"(\d{1,3}\.){3}\d{1,3}")
        & ~df["transaction_id"].duplicated()
    )
    df = df[ok]
    stages.done("validate")
    features = pandas_features(df, cities)
    stages.done("features")
    score(pl.from_pandas(features), detectors, TRANSACTIONS.config)
    stages.done("score")
    return stages.total(), features


def train(root: Path):
    """Promoted transaction models for the benchmark's registry (untimed): features of the file, then
    the shared trainers."""
    from bankanom_pipeline.detection import training
    from bankanom_pipeline.detection.sources import TRANSACTIONS

    bankanom_run_features(root)
    registry = TRANSACTIONS.registry(root / "models")
    import duckdb

    con = duckdb.connect(str(root / "w.duckdb"))
    versions = {
        name: training.train(con, registry, name, TRANSACTIONS.config, DAY, TRANSACTIONS).version.version
        # a tree from before issue 26 (bench/compare.py) has no model_names: its two detectors
        for name in getattr(TRANSACTIONS.config, "model_names", ("isolation_forest", "local_outlier_factor"))
    }
    con.close()
    registry.promote(versions)
    return registry.load_current()


def bankanom_run_features(root: Path) -> None:
    from bankanom_pipeline.defs.validation.gx import GX
    from bankanom_pipeline.sqlmodels.runner import Project
    from bankanom_pipeline.transactions.raw import load_partition
    from bankanom_pipeline.transactions.validation import validate_partition
    from bankanom_pipeline.warehouse.store import EmbeddedWarehouse

    con = EmbeddedWarehouse(root / "w.duckdb").connect()
    load_partition(con, root / "landing", DAY)
    validate_partition(con, DAY, GX)
    Project().materialize(con, "features_transactions", DAY)
    con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from bankanom_pipeline.detection.sources import TRANSACTIONS
    from bankanom_pipeline.transactions.generator import CITIES_PATH, write

    root = Path(tempfile.mkdtemp(prefix="bankanom-tx-bench-"))
    try:
        csv = root / "landing" / DAY / "bench.csv"
        write(csv, root / "bench.labels.csv", rows=args.rows, seed=1, start=dt.date(2026, 1, 1), days=30)
        cities = pd.read_csv(CITIES_PATH)
        detectors = train(root)
        ours, theirs = [], []
        for _ in range(args.runs):
            seconds, sql_features = bankanom_run(root, detectors)
            ours.append(seconds)
            print("bankanom", {k: round(v, 2) for k, v in seconds.items()}, flush=True)
            seconds, pd_features = pandas_run(csv, cities, detectors)
            theirs.append(seconds)
            print("pandas  ", {k: round(v, 2) for k, v in seconds.items()}, flush=True)
        joined = sql_features.join(pl.from_pandas(pd_features), on="transaction_id", suffix="_pd")
        differences = {
            f: float((joined[f].cast(pl.Float64) - joined[f"{f}_pd"].cast(pl.Float64)).abs().max())
            for f in TRANSACTIONS.config.feature_names
        }
        median = {
            side: {s: statistics.median(r[s] for r in runs) for s in runs[0]}
            for side, runs in (("bankanom", ours), ("pandas_sklearn", theirs))
        }
        result = {
            "rows": args.rows,
            "runs": args.runs,
            "median_seconds": median,
            "pandas_over_bankanom": median["pandas_sklearn"]["total"] / median["bankanom"]["total"],
            "pandas_over_bankanom_cpu": median["pandas_sklearn"]["total_cpu"]
            / median["bankanom"]["total_cpu"],
            "features_pandas_over_sql": median["pandas_sklearn"]["features"] / median["bankanom"]["features"],
            "rows_compared": joined.height,
            "max_abs_feature_difference": differences,
            "target": "1M transactions: ingest + validate + features + score <= 30 s",
        }
        print(result, flush=True)
        record("transactions", result)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
