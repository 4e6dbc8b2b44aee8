"""A simulated analyst, for tests, benchmarks and the demo only: it measures how much analysts' labels help.

It does what an analyst does in the console, over the real JSON API: asks ``GET /feedback/queue`` which
items to look at, decides each one, and posts the verdict to ``POST /feedback`` with the queue's reason
as ``selection``. Its verdicts come from ``truth``, which reads the generator's labels; they reach the
re-rankers only through the feedback store, exactly as a person's clicks would. It is never part of the
product's loop: no asset, job or API route imports it (``tests/test_measuring_only.py``); the demo's
CLI command does, to run the loop.

``transaction_truth`` reads a generated delivery's labels file; the log incidents' truth is
``reranking/incident_truth.py``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

Truth = Callable[[list[str]], dict[str, bool]]


@dataclass
class Labelled:
    """What the simulated analyst did: every label it posted, in order."""

    target_ids: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    labels: list[bool] = field(default_factory=list)
    batches: int = 0

    def by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for reason in self.reasons:
            counts[reason] = counts.get(reason, 0) + 1
        return counts

    def positives_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for reason, label in zip(self.reasons, self.labels, strict=True):
            counts[reason] = counts.get(reason, 0) + int(label)
        return counts


def label(
    base_url: str,
    api_key: str,
    kind: str,
    budget: int,
    truth: Truth,
    batch: int = 20,
    analyst_note: str = "simulated",
    client=None,
    between_batches: Callable[[Labelled], None] | None = None,
    partition_date: str | None = None,
) -> Labelled:
    """Label up to ``budget`` items of ``kind`` the queue asks about, ``batch`` at a time, through the
    feedback API at ``base_url`` with ``api_key`` (a key mapped to an analyst). ``client``: an
    ``httpx.Client`` to use instead of a new one (a FastAPI TestClient, whose base_url is its own).
    ``between_batches``: called after each batch (e.g. to re-train a re-ranker and re-publish).
    ``partition_date``: only that day's items (the queue's filter). Stops early when the queue is empty. Raises ``httpx.HTTPStatusError`` on a refused request."""
    import httpx

    if budget < 0 or batch < 1:
        raise ValueError(f"budget must be >= 0 and batch >= 1, not {budget} and {batch}")
    own = client is None
    http = httpx.Client(base_url=base_url, headers={"X-API-Key": api_key}, timeout=60) if own else client
    headers = {} if own else {"X-API-Key": api_key}
    done = Labelled()
    try:
        while len(done.target_ids) < budget:
            n = min(batch, budget - len(done.target_ids))
            params = {"kind": kind, "n": n, **({"partition_date": partition_date} if partition_date else {})}
            asked = http.get("/feedback/queue", params=params, headers=headers)
            asked.raise_for_status()
            items = asked.json()["items"]
            if not items:
                break
            verdicts = truth([item["target_id"] for item in items])
            for item in items:
                is_true = bool(verdicts[item["target_id"]])
                posted = http.post(
                    "/feedback",
                    json={
                        "kind": kind,
                        "target_id": item["target_id"],
                        "label": "true_positive" if is_true else "false_positive",
                        "comment": analyst_note,
                        "selection": item["reason"],
                    },
                    headers=headers,
                )
                posted.raise_for_status()
                done.target_ids.append(item["target_id"])
                done.reasons.append(item["reason"])
                done.labels.append(is_true)
            done.batches += 1
            if between_batches is not None:
                between_batches(done)
    finally:
        if own:
            http.close()
    return done


def transaction_truth(labels_files: list[Path]) -> Truth:
    """Whether each transaction is fraud, from generated deliveries' labels files
    (``TransactionID, is_fraud, pattern, instance_id``; a transaction without a row is normal)."""
    frames = [
        pl.read_csv(p, schema_overrides={"TransactionID": pl.String, "is_fraud": pl.Boolean})
        for p in labels_files
    ]
    fraud = set()
    for frame in frames:
        fraud |= set(frame.filter(pl.col("is_fraud"))["TransactionID"].to_list())

    def truth(target_ids: list[str]) -> dict[str, bool]:
        return {t: t in fraud for t in target_ids}

    return truth
