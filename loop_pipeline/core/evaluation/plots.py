"""The evaluation's figures: coverage vs agreement per task type, and the worst confusions."""

from __future__ import annotations

from pathlib import Path

from loop_pipeline.core.evaluation.report import EvalReport
from loop_pipeline.core.storage import write_file_atomic

# What the certified agreement is measured against (EvalConfig.certify_against), in words.
AGAINST = {
    "reference": "the curated reference (the frontier's output where none)",
    "frontier": "the frontier's output",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers or in Dagster runs
    import matplotlib.pyplot as plt

    return plt


def _coverage_plot(plt, report: EvalReport, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, task in report.tasks.items():
        points = [p for p in task.curve if p.agreement is not None]
        ax.plot([p.coverage for p in points], [p.agreement for p in points], marker=".", label=name)
    ax.axhline(report.target_agreement, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("coverage (share served locally, test half)")
    ax.set_ylabel(f"agreement among served, vs\n{AGAINST.get(report.certified_against, report.certified_against)}")
    ax.set_title(f"coverage vs agreement — {report.model}")
    ax.legend()
    fig.tight_layout()
    write_file_atomic(path, lambda temporary: fig.savefig(temporary, dpi=100, format="png"))
    plt.close(fig)
    return path


def _confusions_plot(plt, report: EvalReport, path: Path) -> Path:
    confusions = [(f"{c.expected} -> {c.candidate}"[:60], c.count) for t in report.tasks.values() for c in t.confusions][:10]
    fig, ax = plt.subplots(figsize=(7, 4))
    if confusions:
        ax.barh([c[0] for c in confusions][::-1], [c[1] for c in confusions][::-1])
    expected = "frontier" if report.certified_against == "frontier" else "reference"
    ax.set_xlabel(f"disagreements ({expected} -> candidate)")
    ax.set_title("worst confusions")
    fig.tight_layout()
    write_file_atomic(path, lambda temporary: fig.savefig(temporary, dpi=100, format="png"))
    plt.close(fig)
    return path


def save_plots(report: EvalReport, folder: Path) -> list[Path]:
    """Coverage-agreement curve per task type and the worst confusions, as PNG files."""
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    return [
        _coverage_plot(plt, report, folder / "coverage_agreement.png"),
        _confusions_plot(plt, report, folder / "worst_confusions.png"),
    ]
