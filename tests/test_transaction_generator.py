import datetime as dt
import re
import subprocess
import sys

import polars as pl
import pytest

from bankanom_pipeline.transactions.generator import (
    CSV_COLUMNS,
    MAX_SEED,
    PATTERNS,
    generate,
    haversine_km,
    load_cities,
    write,
)

ROWS = 30_000
HEADER = (
    "TransactionID,AccountID,TransactionAmount,TransactionDate,TransactionType,Location,DeviceID,"
    "IP Address,MerchantID,Channel,CustomerAge,CustomerOccupation,TransactionDuration,LoginAttempts,"
    "AccountBalance,PreviousTransactionDate"
)
DATE = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"
OCTET = r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
LINE = re.compile(
    rf"TX\d{{6,}},AC2\d{{5}},\d+\.\d{{2}},{DATE},(Debit|Credit),[A-Za-z .]+,D\d{{6}},"
    rf"{OCTET}\.{OCTET}\.{OCTET}\.{OCTET},M\d{{3}},(ATM|Online|Branch),\d+,"
    rf"(Doctor|Student|Retired|Engineer|Other),\d+,\d+,\d+\.\d{{2}},{DATE}"
)


@pytest.fixture(scope="module")
def generated():
    """30k transactions joined with their labels, times parsed, and the seed's coordinates attached."""
    transactions, labels = generate(ROWS, seed=11)
    cities = load_cities()
    frame = (
        transactions.with_columns(
            pl.col("TransactionDate").str.to_datetime("%Y-%m-%d %H:%M:%S").alias("at"),
            pl.col("PreviousTransactionDate").str.to_datetime("%Y-%m-%d %H:%M:%S").alias("previous_at"),
        )
        .hstack(labels.drop("TransactionID"))
        .join(cities, left_on="Location", right_on="location", how="left", maintain_order="left")
    )
    return transactions, labels, frame


def _pattern(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    return frame.filter(pl.col("pattern") == name)


def _normal(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(~pl.col("is_fraud"))


def test_same_arguments_give_identical_files_and_another_seed_does_not(tmp_path):
    paths = [(tmp_path / f"t{i}.csv", tmp_path / f"l{i}.csv") for i in range(3)]
    for (out, labels), seed in zip(paths, (5, 5, 6), strict=True):
        assert write(out, labels, rows=4_000, seed=seed, days=7) == (4_000, 28)
    assert paths[0][0].read_bytes() == paths[1][0].read_bytes()
    assert paths[0][1].read_bytes() == paths[1][1].read_bytes()
    assert paths[0][0].read_bytes() != paths[2][0].read_bytes()
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_csv_has_the_kaggle_header_and_row_format(tmp_path):
    out = tmp_path / "tx.csv"
    write(out, None, rows=3_000, seed=2)
    lines = out.read_text().splitlines()
    assert lines[0] == HEADER == ",".join(CSV_COLUMNS)
    assert len(lines) == 3_001
    bad = [line for line in lines[1:] if not LINE.fullmatch(line)]
    assert not bad, bad[:3]
    assert [line.split(",")[0] for line in lines[1:4]] == ["TX000001", "TX000002", "TX000003"]


def test_columns_types_and_enums(generated):
    transactions, _, _ = generated
    assert transactions.columns == CSV_COLUMNS
    assert transactions.schema["TransactionAmount"] == transactions.schema["AccountBalance"] == pl.Float64
    for column in ("CustomerAge", "TransactionDuration", "LoginAttempts"):
        assert transactions.schema[column] == pl.Int64
    assert set(transactions["TransactionType"]) == {"Debit", "Credit"}
    assert set(transactions["Channel"]) == {"ATM", "Online", "Branch"}
    assert set(transactions["CustomerOccupation"]) == {"Doctor", "Student", "Retired", "Engineer", "Other"}
    assert set(transactions["Location"]) <= set(load_cities()["location"])
    assert transactions["MerchantID"].str.slice(1).cast(pl.Int64).is_between(1, 150).all()


@pytest.mark.parametrize("rows", [0, 1, 7, 999, 5_001])
def test_row_count_is_exact_and_labels_align(rows):
    transactions, labels = generate(rows, seed=rows)
    assert transactions.height == labels.height == rows
    assert labels.columns == ["TransactionID", "is_fraud", "pattern", "instance_id"]
    assert labels["TransactionID"].equals(transactions["TransactionID"])
    assert labels["is_fraud"].sum() == round(rows * 0.007)


def test_ids_are_in_time_order_inside_the_range(generated):
    transactions, _, frame = generated
    width = len(transactions["TransactionID"][0]) - 2
    assert transactions["TransactionID"].to_list() == [f"TX{i:0{width}d}" for i in range(1, ROWS + 1)]
    assert frame["at"].is_sorted()
    assert frame["at"].min() >= dt.datetime(2026, 1, 1)
    assert frame["at"].max() < dt.datetime(2026, 1, 31)
    assert transactions["AccountID"].n_unique() > 600  # about rows / 40 accounts


def test_labels_name_one_pattern_per_instance(generated):
    _, labels, frame = generated
    normal = labels.filter(~pl.col("is_fraud"))
    assert normal["pattern"].null_count() == normal["instance_id"].null_count() == normal.height
    fraud = labels.filter(pl.col("is_fraud"))
    assert fraud["instance_id"].str.contains(r"^[a-z_]+-\d{4}$").all()
    assert (fraud["instance_id"].str.extract(r"^([a-z_]+)-") == fraud["pattern"]).all()
    accounts = frame.filter(pl.col("is_fraud")).group_by("instance_id").agg(pl.col("AccountID").n_unique())
    assert (accounts["AccountID"] == 1).all()


def test_all_patterns_present_at_the_requested_share(generated):
    _, labels, _ = generated
    fraud = labels.filter(pl.col("is_fraud"))
    assert set(fraud["pattern"]) == set(PATTERNS)
    assert fraud.height == round(ROWS * 0.007)
    instances = fraud.group_by("pattern").agg(pl.col("instance_id").n_unique())
    assert instances["instance_id"].min() >= 5
    share = generate(20_000, seed=3, fraud_share=0.02)[1]["is_fraud"].mean()
    assert share == pytest.approx(0.02)


def test_balances_follow_the_transactions_and_never_go_negative(generated):
    _, _, frame = generated
    assert frame["AccountBalance"].min() >= 0
    signed = pl.when(pl.col("TransactionType") == "Credit").then(1).otherwise(-1) * pl.col(
        "TransactionAmount"
    )
    steps = frame.with_columns(
        expected=pl.col("AccountBalance").shift(1).over("AccountID") + signed,
        previous=pl.col("at").shift(1).over("AccountID"),
    )
    assert (steps["expected"] - steps["AccountBalance"]).abs().max() < 0.005
    followed = steps.filter(pl.col("previous").is_not_null())
    assert (followed["previous"] == followed["previous_at"]).all()
    first = steps.filter(pl.col("previous").is_null())
    assert (first["previous_at"] < first["at"]).all()


def test_accounts_have_consistent_profiles_and_habits(generated):
    _, _, frame = generated
    normal = _normal(frame)
    profiles = frame.group_by("AccountID").agg(
        pl.col("CustomerAge").n_unique().alias("ages"),
        pl.col("CustomerOccupation").n_unique().alias("occupations"),
        pl.col("CustomerAge").first(),
        pl.col("CustomerOccupation").first(),
    )
    assert (profiles["ages"] == 1).all() and (profiles["occupations"] == 1).all()
    ranges = {"Student": (18, 26), "Retired": (60, 90), "Doctor": (25, 65), "Engineer": (25, 65)}
    for occupation, (low, high) in ranges.items():
        ages = profiles.filter(pl.col("CustomerOccupation") == occupation)["CustomerAge"]
        assert ages.is_between(low, high).all(), occupation
    habits = normal.group_by("AccountID").agg(
        pl.col("DeviceID").n_unique().alias("devices"), pl.col("MerchantID").n_unique().alias("merchants")
    )
    assert habits["devices"].max() <= 3
    assert habits["merchants"].median() <= 8
    away = normal.select((pl.col("Location") != pl.col("Location").mode().first().over("AccountID")).mean())
    assert 0.005 < away.item() < 0.08  # a few trips, mostly at home
    assert normal["LoginAttempts"].is_in([1, 2]).all()
    assert (normal["LoginAttempts"] == 1).mean() > 0.95
    assert normal["TransactionDuration"].is_between(10, 300).mean() > 0.95
    assert normal["at"].dt.hour().is_between(7, 22).mean() > 0.9
    assert 0.15 < (normal["TransactionType"] == "Credit").mean() < 0.3


def test_amount_spike_is_far_above_the_account_median(generated):
    _, _, frame = generated
    medians = _normal(frame).group_by("AccountID").agg(pl.col("TransactionAmount").median().alias("median"))
    spikes = _pattern(frame, "amount_spike").join(medians, on="AccountID")
    assert spikes.height > 0
    assert (spikes["TransactionAmount"] >= 8 * spikes["median"]).all()
    assert (spikes["TransactionType"] == "Debit").all()


def test_rapid_fire_is_a_burst(generated):
    _, _, frame = generated
    bursts = (
        _pattern(frame, "rapid_fire")
        .with_columns(gap=(pl.col("at") - pl.col("at").shift(1).over("instance_id")).dt.total_seconds())
        .group_by("instance_id")
        .agg(pl.len(), pl.col("gap").max())
    )
    assert bursts["len"].is_between(5, 12).all()
    assert (bursts["gap"] <= 300).all()


def test_new_device_location_uses_a_device_ip_and_city_the_account_never_used(generated):
    _, _, frame = generated
    rows = _pattern(frame, "new_device_location")
    assert rows.height > 0
    for row in rows.iter_rows(named=True):
        others = frame.filter(
            (pl.col("AccountID") == row["AccountID"])
            & (pl.col("instance_id") != row["instance_id"]).fill_null(True)
        )
        assert row["DeviceID"] not in set(others["DeviceID"])
        assert row["IP Address"] not in set(others["IP Address"])
        assert row["Location"] != others["Location"].mode().first()


def test_impossible_travel_is_over_1000_km_within_an_hour(generated):
    _, _, frame = generated
    hops = frame.with_columns(
        pl.col("lat").shift(1).over("AccountID").alias("lat0"),
        pl.col("lon").shift(1).over("AccountID").alias("lon0"),
        (pl.col("at") - pl.col("at").shift(1).over("AccountID")).dt.total_seconds().alias("gap"),
    )
    travel = _pattern(hops, "impossible_travel")
    assert travel.height > 0
    km = haversine_km(travel["lat0"], travel["lon0"], travel["lat"], travel["lon"])
    assert (km > 1000).all()
    assert travel["gap"].is_between(300, 3600).all()


def test_login_attempts_stand_out(generated):
    _, _, frame = generated
    assert _pattern(frame, "login_attempts")["LoginAttempts"].is_between(3, 5).all()
    assert _normal(frame)["LoginAttempts"].max() <= 2


def test_balance_drain_takes_most_of_the_balance_within_an_hour(generated):
    _, _, frame = generated
    drains = (
        _pattern(frame, "balance_drain")
        .group_by("instance_id")
        .agg(
            pl.len(),
            pl.col("TransactionAmount").sum().alias("total"),
            (pl.col("AccountBalance").first() + pl.col("TransactionAmount").first()).alias("before"),
            (pl.col("at").max() - pl.col("at").min()).dt.total_seconds().alias("span"),
            (pl.col("TransactionType") == "Debit").all().alias("debits"),
        )
    )
    assert drains.height > 0
    assert drains["len"].is_between(2, 4).all() and drains["debits"].all()
    assert (drains["span"] <= 3600).all()
    assert (drains["total"] / drains["before"]).is_between(0.8, 1.0).all()


def test_odd_hours_happen_at_night_for_daytime_accounts(generated):
    _, _, frame = generated
    night = _pattern(frame, "odd_hours")
    minutes = night["at"].dt.hour().cast(pl.Int32) * 60 + night["at"].dt.minute()
    assert minutes.is_between(60, 270).all()
    usual_hours = (
        _normal(frame).filter(pl.col("AccountID").is_in(night["AccountID"].implode()))["at"].dt.hour()
    )
    assert not usual_hours.is_between(0, 5).any()


def test_unusual_channel_was_never_used_by_the_account(generated):
    _, _, frame = generated
    used = _normal(frame).group_by("AccountID").agg(pl.col("Channel").unique().alias("used"))
    unusual = _pattern(frame, "unusual_channel").join(used, on="AccountID")
    assert unusual.height > 0
    assert not any(c in u for c, u in zip(unusual["Channel"], unusual["used"], strict=True))


@pytest.mark.e2e
def test_cli_writes_transactions_and_labels(tmp_path):
    out = tmp_path / "2026-01-31" / "transactions.csv"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bankanom_pipeline.cli",
            "generate-transactions",
            "--rows",
            "2000",
            "--seed",
            "7",
            "--start",
            "2026-01-01",
            "--days",
            "30",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "2,000 transactions (14 fraud)" in result.stdout
    labels = out.with_name("transactions.labels.csv")
    assert len(out.read_text().splitlines()) == len(labels.read_text().splitlines()) == 2_001
    assert sorted(p.name for p in out.parent.iterdir()) == ["transactions.csv", "transactions.labels.csv"]


def test_first_id_gives_files_disjoint_id_ranges():
    first, _ = generate(500, seed=1)
    second, second_labels = generate(500, seed=2, first_id=501)
    assert second["TransactionID"][0] == "TX000501" and second["TransactionID"][-1] == "TX001000"
    assert second_labels["TransactionID"].to_list() == second["TransactionID"].to_list()
    assert not set(first["TransactionID"]) & set(second["TransactionID"])


@pytest.mark.parametrize(
    ("seeds", "rows", "accounts"),
    [
        ((21, 22), 200_000, None),  # the benches' deliveries: 200k rows, 5,000 accounts
        ((7, 70), 200_000, 99_999),  # the most accounts a delivery may have, every one transacting
    ],
)
def test_two_seeds_never_share_an_account_and_one_seed_keeps_its_accounts(seeds, rows, accounts):
    # a delivery of another seed is other customers (issue 26's "new accounts and seed"): drawn from one
    # 1..99,999 space, ~250 of 5,000 ids met the other delivery's, and every one at 99,999 accounts
    ids = [generate(rows, seed=seed, accounts=accounts)[0]["AccountID"] for seed in seeds]
    expected = accounts or rows // 40
    for seed, column in zip(seeds, ids, strict=True):
        assert column.n_unique() == expected
        assert column.str.contains(rf"^AC{seed}\d{{5}}$").all()
    assert not set(ids[0]) & set(ids[1])
    again = generate(rows, seed=seeds[0], accounts=accounts)[0]["AccountID"]
    assert again.to_list() == ids[0].to_list()  # the same seed: the same customers, row for row


def test_account_ids_pass_the_pipelines_validation_and_the_apis_schema(tmp_path):
    from bankanom_api.transactions import Transaction
    from bankanom_pipeline.defs.validation.gx import GX
    from bankanom_pipeline.transactions.raw import load_partition
    from bankanom_pipeline.transactions.validation import validate_partition
    from bankanom_pipeline.warehouse.store import EmbeddedWarehouse

    day = "2026-02-01"
    frames = [generate(300, seed=seed, first_id=1 + 300 * k)[0] for k, seed in enumerate((0, MAX_SEED))]
    assert frames[0]["AccountID"].str.len_chars().max() == 8  # AC0 + 5 digits
    assert frames[1]["AccountID"].str.len_chars().max() == 26  # the longest id: still a Kaggle-like one
    (tmp_path / "landing" / day).mkdir(parents=True)
    for k, frame in enumerate(frames):
        frame.write_csv(tmp_path / "landing" / day / f"{k}.csv")
    con = EmbeddedWarehouse(tmp_path / "w.duckdb").connect()
    try:
        loaded = load_partition(con, tmp_path / "landing", day)
        counts, _ = validate_partition(con, day, GX)
        stored = {
            r[0] for r in con.execute("SELECT DISTINCT account_id FROM validated_transactions").fetchall()
        }
    finally:
        con.close()
    assert loaded.loaded == counts.raw == counts.validated == 600, (loaded, counts)
    assert counts.quarantined == 0
    assert stored == set(frames[0]["AccountID"]) | set(frames[1]["AccountID"])
    for frame in frames:
        record = {k.replace(" ", ""): v for k, v in frame.cast(pl.String).row(0, named=True).items()}
        assert Transaction.from_text(record).AccountID == record["AccountID"]
    with pytest.raises(ValueError, match="seed must be in"):
        generate(10, seed=MAX_SEED + 1)
