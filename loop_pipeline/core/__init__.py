"""Pure logic: no Dagster imports, so the CLI, the tests and the assets run the same code."""
