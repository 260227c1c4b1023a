"""Partitions shared by the stages: one per UTC day of arriving traffic."""

import dagster as dg

daily_partitions = dg.DailyPartitionsDefinition(start_date="2024-01-01", timezone="UTC")
