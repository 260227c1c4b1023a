"""``python -m loop_pipeline.cli``."""

from loop_pipeline.cli import app

app()
