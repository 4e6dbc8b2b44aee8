"""Daily UTC partitions: a day of mock traffic is ~1M lines at the default rate, a natural unit for
backfills, training windows and one DuckDB transaction; hourly would mean 24x the runs for no gain."""

import dagster as dg

PARTITIONS_START = "2025-01-01"
daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC", end_offset=1)
