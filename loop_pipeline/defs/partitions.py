"""Partitions shared by the stages: one per UTC day of arriving traffic."""

import dagster as dg

# end_offset=1: today is a partition too, so the router's traffic of the day can be ingested while it
# lands (the landing sensor ingests the day again when its files change).
daily_partitions = dg.DailyPartitionsDefinition(start_date="2024-01-01", timezone="UTC", end_offset=1)
