"""A day that changes after the next day was built re-runs what the next day read from it: the lookback
models depend on the previous day (defs/features/assets.py), and they follow their upstream partitions
as scoring does (``follows_upstream`` in their SQL config: the FOLLOW_UPSTREAM automation condition on
the asset), so the automation sensor requests them. Evaluated with Dagster's
own automation evaluation on the real definitions, materializations reported to an ephemeral instance."""

from __future__ import annotations

import dagster as dg

from bankanom_pipeline.definitions import defs
from bankanom_pipeline.defs.conditions import FOLLOW_UPSTREAM

DAYS = ["2026-02-01", "2026-02-02"]
LOOKBACK = ["feat_user_activity", "feat_ip_activity", "feat_service_activity", "feat_rarity"]


def _materialize(instance: dg.DagsterInstance, keys, days) -> None:
    for key in keys:
        partitioned = defs.resolve_assets_def(key).partitions_def is not None
        for day in days if partitioned else [None]:
            instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=day))


def _requested(result, name: str) -> set[str]:
    return set(result.get_requested_partitions(dg.AssetKey(name)))


def test_a_late_day_re_runs_the_next_days_lookback_features_and_features_events():
    graph = defs.resolve_asset_graph()
    keys = sorted(_upstream_of(graph, dg.AssetKey("features_events")))
    selection = dg.AssetSelection.assets(*LOOKBACK, "features_events")

    with dg.DagsterInstance.ephemeral() as instance:
        _materialize(instance, [*keys, dg.AssetKey("features_events")], DAYS)
        settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection)
        assert settled.total_requested == 0  # everything is up to date

        # a late file for the first day: its staging rows are rebuilt
        _materialize(instance, [dg.AssetKey("stg_logs")], DAYS[:1])
        late = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=selection, cursor=settled.cursor
        )
        # the next day's lookback features, and features_events with them in the same request
        for name in [*LOOKBACK, "features_events"]:
            assert DAYS[1] in _requested(late, name), (name, _requested(late, name))
        # and not the day after (2026-02-03 reads 02-02, but its own staging rows are missing)
        assert not {d for n in LOOKBACK for d in _requested(late, n)} - set(DAYS)


def test_which_assets_follow_their_upstream_partitions():
    graph = defs.resolve_asset_graph()
    conditions = {
        key.to_user_string(): graph.get(key).automation_condition for key in graph.get_all_asset_keys()
    }
    following = {name for name, condition in conditions.items() if condition == FOLLOW_UPSTREAM}
    assert following == {
        *LOOKBACK,
        "features_events",
        "scored_events",
        "incidents",
        "incident_reranks",
        "evaluation",
        "api_snapshot",
        "scored_transactions",
        "transaction_incidents",
        "transaction_evaluation",
        "transaction_snapshot",
    }
    # nothing else runs on its own: ingest and validation are requested by the landing sensor, training
    # by the drift sensor and the schedules
    assert {name for name, condition in conditions.items() if condition is not None} == following


def _upstream_of(graph, key: dg.AssetKey) -> set[dg.AssetKey]:
    seen, todo = set(), [key]
    while todo:
        for parent in graph.get(todo.pop()).parent_keys:
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


SCORING = ["scored_events", "incidents", "evaluation", "api_snapshot"]


def test_a_day_whose_features_are_rebuilt_is_scored_again_and_no_other_day():
    """A second landing file for a day re-runs its features (the landing sensor, test_automation.py);
    the automation sensor then requests that day's scores, incidents, evaluation and snapshot, all in
    one evaluation, and nothing for the days around it."""
    graph = defs.resolve_asset_graph()
    keys = sorted(_upstream_of(graph, dg.AssetKey("api_snapshot")))
    selection = dg.AssetSelection.assets(*SCORING)

    with dg.DagsterInstance.ephemeral() as instance:
        _materialize(instance, [*keys, *map(dg.AssetKey, SCORING)], DAYS)
        settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection)
        assert settled.total_requested == 0

        _materialize(instance, [dg.AssetKey("features_events")], DAYS[:1])
        again = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=selection, cursor=settled.cursor
        )
        assert {name: _requested(again, name) for name in SCORING} == {name: {DAYS[0]} for name in SCORING}
