"""Which items to ask analysts about next.

A label helps most where the ranking is unsure, so the queue is not only the top of the list:

- ``top``: the highest-ranked unlabelled items (the re-ranked order when a re-ranker is promoted, else
  the unsupervised score): what an analyst would look at anyway, and the items whose labels fix the
  most visible mistakes;
- ``uncertain``: the items nearest the decision boundary: a re-ranked probability nearest the promoted
  re-ranker's cut (``rerank_threshold``, 0.5 by default) when one is promoted, else the unsupervised
  score nearest the operating threshold (by default the candidates' median score);
- ``random``: drawn uniformly from the unlabelled candidates the re-ranker will judge (``score`` at
  least ``random_min_score``, its floor; every candidate when None), RANDOM_SHARE of each batch. These
  are the unbiased share: items chosen for being at the top or near the boundary say little about the
  rest of the list, and the gate requires that the random ones do not show a loss (core.gate). Drawn
  below the floor they would be items the re-ranker never judges, nearly all normal: no frauds to
  compare two orders on. When fewer are left there than the share asks for, the batch's rest is
  ``uncertain``.

Deterministic for a seed and a set of candidates, whatever their order.
"""

from __future__ import annotations

import numpy as np
import polars as pl

RANDOM_SHARE = 0.2
UNCERTAIN_SHARE = 0.4  # of each batch; the rest is ``top``
REASONS = ("top", "uncertain", "random")
COLUMNS = {"target_id": pl.String, "reason": pl.String, "score": pl.Float64, "rerank_score": pl.Float64}


def select(
    candidates: pl.DataFrame,
    labelled: set[str],
    n: int,
    seed: int = 0,
    threshold: float | None = None,
    random_min_score: float | None = None,
    rerank_threshold: float = 0.5,
) -> pl.DataFrame:
    """Up to ``n`` unlabelled candidates to ask about, columns ``target_id, reason, score,
    rerank_score``: top first, then uncertain, then random (then the uncertain ones standing in for
    random draws the floor left short).

    ``candidates``: ``target_id``, ``score`` (unsupervised, higher = more anomalous), ``rerank_score``
    (null where no re-ranker is promoted). ``labelled``: ids that already have a label that counts
    (never returned). ``threshold``: the unsupervised operating threshold, used for ``uncertain`` while
    no re-ranker is promoted (default: the candidates' median score). ``rerank_threshold``: the promoted
    re-ranker's cut, used for ``uncertain`` while one is. ``random_min_score``: the lowest unsupervised
    score the ``random`` share is drawn from (the re-ranker's floor)."""
    missing = {"target_id", "score"} - set(candidates.columns)
    if missing:
        raise ValueError(f"candidates lack column(s) {sorted(missing)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    if "rerank_score" not in candidates.columns:
        candidates = candidates.with_columns(rerank_score=pl.lit(None, dtype=pl.Float64))
    pool = (
        candidates.select(
            pl.col("target_id").cast(pl.String),
            pl.col("score").cast(pl.Float64),
            pl.col("rerank_score").cast(pl.Float64),
        )
        .filter(~pl.col("target_id").is_in(list(labelled)) & pl.col("score").is_not_null())
        .unique("target_id", keep="first")
        .sort("target_id")
    )
    if n == 0 or pool.height == 0:
        return pl.DataFrame(schema=COLUMNS)
    n = min(n, pool.height)
    n_random = round(n * RANDOM_SHARE)
    n_uncertain = round(n * UNCERTAIN_SHARE)
    n_top = n - n_random - n_uncertain

    reranked = pool["rerank_score"].null_count() < pool.height
    rank_by = "rerank_score" if reranked else "score"
    if reranked:
        distance = (pl.col("rerank_score") - float(rerank_threshold)).abs()
    else:
        boundary = float(pool["score"].median()) if threshold is None else float(threshold)
        distance = (pl.col("score") - boundary).abs()

    pool = pool.with_row_index("i")
    taken: list[tuple[int, str]] = []
    chosen: set[int] = set()

    def take(order: pl.DataFrame, k: int, reason: str) -> None:
        # at most k of the first k + len(chosen) rows can be new: the rest were taken for another reason
        for i in order["i"].head(k + len(chosen)):
            if k == 0:
                return
            if i not in chosen:
                chosen.add(i)
                taken.append((i, reason))
                k -= 1

    top = pool.sort([rank_by, "score", "target_id"], descending=[True, True, False], nulls_last=True)
    take(top, n_top, "top")
    near = pool.with_columns(distance=distance).sort(["distance", "target_id"], nulls_last=True)
    take(near, n_uncertain, "uncertain")
    rng = np.random.default_rng(seed)
    eligible = (
        range(pool.height)
        if random_min_score is None
        else pool.filter(pl.col("score") >= float(random_min_score))["i"].to_list()
    )
    remaining = np.array([i for i in eligible if i not in chosen], dtype=np.int64)
    draws = rng.choice(remaining, size=min(n_random, len(remaining)), replace=False)
    taken += [(int(i), "random") for i in draws]
    # fewer candidates above the floor than the random share asks for: the rest of the batch is uncertain
    take(near, n_random - len(draws), "uncertain")

    index = pl.DataFrame(
        {"i": [t[0] for t in taken], "reason": [t[1] for t in taken]},
        schema={"i": pl.UInt32, "reason": pl.String},
    )
    return index.join(pool, on="i", how="left", maintain_order="left").select(list(COLUMNS))
