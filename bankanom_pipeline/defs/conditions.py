"""The automation condition of the assets that follow their upstream partitions on their own."""

import dagster as dg

# Eager, for any partition (a late file re-runs an old day), never because a new model was promoted
# (that would rescore all history; scoring uses the promoted models from then on), and not on labels
# alone: labels land early in the features jobs, and evaluation must wait for the day's new scores,
# which arrive through the scores and incidents anyway. The automation sensor (automation/sensors.py)
# evaluates it.
FOLLOW_UPSTREAM = (
    dg.AutomationCondition.eager()
    .without(dg.AutomationCondition.in_latest_time_window())
    .ignore(
        dg.AssetSelection.assets(
            "promoted_models", "log_labels", "promoted_transaction_models", "transaction_labels"
        )
    )
    .with_label("eager, any partition, not on promotion or labels")
)
