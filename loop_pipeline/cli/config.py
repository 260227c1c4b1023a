"""Configuration commands: config check."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from loop_pipeline.cli.common import app, emit, fail, say

config_app = typer.Typer(help="The YAML files under configs/ (LOOP_CONFIG_DIR).", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("check")
def config_check(
    config_dir: Optional[Path] = typer.Option(None, "--dir", help="Config folder (default: LOOP_CONFIG_DIR, else ./configs)."),
) -> None:
    """Validate every config file with its typed model; each problem on one line naming the file,
    the field and what is allowed. Exit 2 when any file is invalid."""
    from loop_pipeline.config_files import check_config_dir
    from loop_pipeline.settings import LoopSettings

    folder = config_dir or LoopSettings().configs
    if not folder.is_dir():
        fail(f"{folder} is not a folder")
    results = check_config_dir(folder)
    for path, problem in results.items():
        say(f"ok    {path}" if problem is None else f"FAIL  {problem}")
    failed = {path: problem for path, problem in results.items() if problem}
    emit({"config_dir": str(folder), "files": len(results), "failed": failed})
    if failed:
        raise typer.Exit(2)
