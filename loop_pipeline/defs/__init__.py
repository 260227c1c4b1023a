"""Dagster definitions, one folder per stage; assets call core/ so every entry point runs one code."""
