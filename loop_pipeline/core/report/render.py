"""The report as text (markdown tables: the terminal and Dagster's metadata) and as a PNG plot."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from loop_pipeline.core.report.model import GoldFigures, LiveFigures, LoopReport


def _f(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _with_n(value: Optional[float], n: int) -> str:
    return "-" if value is None else f"{value:.3f} (n={n})"


def _rows(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def rounds_table(report: LoopReport) -> str:
    header = ["round", "evaluated", "gate", "champion", "dataset", "SFT rows", "target agreement",
              "coverage at target", "out-of-scope escalated", "blended cost ratio", "flag"]
    flagged = {flag.round for flag in report.flags}
    rows = []
    for item in report.rounds:
        r = item.record
        rows.append([
            str(r.round), r.evaluated_at[:19], "promoted" if r.promoted else "refused", f"v{r.champion_version}" if r.champion_version else "-",
            r.dataset_version, "-" if r.sft_rows is None else str(r.sft_rows), _f(r.target_agreement, 2), _f(r.holdout_coverage),
            _f(r.holdout_out_of_scope_escalated), _f(r.holdout_cost_ratio, 4), "FLAGGED" if r.round in flagged else "",
        ])
    return _rows(header, rows)


def _live_row(label: str, live: LiveFigures) -> list[str]:
    return [
        label, f"v{live.champion_version}" if live.champion_version else "none", str(live.requests), str(live.served_locally),
        _f(live.local_share), _with_n(live.shadow_agreement, live.shadowed), _f(live.blended_cost_ratio, 4),
        f"{live.frontier_cost_estimated}/{live.costed}",
    ]


def live_table(report: LoopReport) -> str:
    header = ["round", "champion", "requests served", "served locally", "local share", "shadow agreement",
              "blended cost ratio", "frontier cost estimated"]
    rows = [_live_row(str(item.record.round), item.live) for item in report.rounds if item.live is not None]
    rows += [_live_row("no round", live) for live in report.unattributed]
    return _rows(header, rows) if rows else "no router traffic in raw_traces yet\n"


def _gold_row(label: str, version: str, gold: GoldFigures) -> list[str]:
    return [
        label, version, str(gold.matched), _with_n(gold.coverage, gold.in_scope), _with_n(gold.local_agreement, gold.local_n),
        _with_n(gold.out_of_scope_escalated, gold.out_of_scope), _f(gold.routed_accuracy),
    ]


def gold_table(report: LoopReport) -> str:
    header = ["round", "champion", "replayed requests", "coverage (in scope)", "agreement of local answers",
              "out-of-scope escalated", "routed accuracy"]
    rows = [
        _gold_row(str(item.record.round), f"v{item.record.champion_version}", item.gold)
        for item in report.rounds if item.gold is not None
    ]
    rows += [_gold_row("no round", version, gold) for version, gold in report.unattributed_gold.items()]
    return _rows(header, rows) if rows else "no replayed traffic with simulated gold\n"


def flags_text(report: LoopReport) -> str:
    if not report.flags:
        return "no round serves less traffic than the one before it at the same target agreement\n"
    out = []
    for flag in report.flags:
        out.append(f"- round {flag.round} (vs round {flag.previous_round}): " + "; ".join(flag.what))
        out += [f"  - {reason}" for reason in flag.reasons]
    return "\n".join(out) + "\n"


def report_text(report: LoopReport) -> str:
    """Every section, markdown (readable in a terminal as it is)."""
    estimated = (
        f" (all-frontier cost of an unshadowed local request: its tokens at {report.frontier_model}'s price, estimated)"
        if report.frontier_model else ""
    )
    return (
        "## Rounds: holdout of each round's dataset version (test half, certification reference)\n\n" + rounds_table(report)
        + "\n## Live: the router's traces of each round's champion" + estimated + "\n\n" + live_table(report)
        + "\n## Simulated gold: replayed requests against the simulator's gold answers\n\n" + gold_table(report)
        + "\n## Flags\n\n" + flags_text(report)
    )


def _series(report: LoopReport) -> dict[str, list[Optional[float]]]:
    live = [item.live for item in report.rounds]
    gold = [item.gold for item in report.rounds]
    return {
        "holdout coverage at target": [item.record.holdout_coverage for item in report.rounds],
        "live local share": [x.local_share if x else None for x in live],
        "live shadow agreement": [x.shadow_agreement if x else None for x in live],
        "coverage (simulated gold)": [x.coverage if x else None for x in gold],
        "local agreement (simulated gold)": [x.local_agreement if x else None for x in gold],
        "out-of-scope escalated (simulated gold)": [x.out_of_scope_escalated if x else None for x in gold],
    }


def save_plot(report: LoopReport, path: Path) -> Path:
    """Two panels per round: coverage and agreement figures; blended cost ratio (holdout, live)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [item.record.round for item in report.rounds]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, values in _series(report).items():
        points = [(x, y) for x, y in zip(rounds, values) if y is not None]
        if points:
            left.plot(*zip(*points), marker="o", label=name)
    for flag in report.flags:
        left.axvline(flag.round, color="red", linestyle=":", alpha=0.6)
        left.annotate("flagged", (flag.round, 0.02), color="red", rotation=90, fontsize=8)
    left.set(xlabel="round", ylabel="share", ylim=(0, 1.05), title="coverage and agreement per round")
    left.set_xticks(rounds)
    left.legend(fontsize=7, loc="lower left")
    width = 0.35
    holdout = [item.record.holdout_cost_ratio or 0.0 for item in report.rounds]
    live = [item.live.blended_cost_ratio if item.live and item.live.blended_cost_ratio is not None else 0.0 for item in report.rounds]
    right.bar([r - width / 2 for r in rounds], holdout, width, label="holdout (evaluation's estimate)")
    right.bar([r + width / 2 for r in rounds], live, width, label="live (router traces)")
    right.set(xlabel="round", ylabel="cost / all-frontier cost", title="blended cost ratio per round")
    right.set_xticks(rounds)
    right.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
