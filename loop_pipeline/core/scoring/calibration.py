"""Fusion and calibration: the configured logit over the signals, calibrated against human review
(Platt or isotonic) into ``p_good``, with held-out Brier score and ECE by k-fold cross-validation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np
import polars as pl

from loop_pipeline.core.scoring.config import SIGNALS, ScoringConfig


def signal_logit(config: ScoringConfig) -> pl.Expr:
    """The configured logit: bias + sum of weight x signal (see configs/scoring.yaml)."""
    terms = [pl.lit(config.bias)]
    for name in SIGNALS:
        weight = config.weight(name)
        if name == "edit_similarity":
            terms.append(pl.col(name).fill_null(0.0) * weight)
        elif name == "judge_score":
            terms.append((pl.col(name) - 0.5).fill_null(0.0) * weight)
        else:
            terms.append(pl.col(name).cast(pl.Float64) * weight)
    return pl.sum_horizontal(terms)


@dataclass
class QualityModel:
    """Maps the configured logit to a calibrated probability that the output is good."""

    weights_version: str
    method: str  # platt | isotonic | none
    platt: tuple[float, float] | None = None  # p = sigmoid(a * logit + b)
    isotonic_x: list[float] | None = None
    isotonic_y: list[float] | None = None
    n_reviewed: int = 0
    n_reviewed_bad: int = 0
    metrics: dict[str, float | None] = field(default_factory=dict)
    note: str = ""

    def predict(self, logit: np.ndarray) -> np.ndarray:
        logit = np.asarray(logit, dtype=float)
        if self.method == "platt" and self.platt is not None:
            a, b = self.platt
            return _sigmoid(a * logit + b)
        if self.method == "isotonic" and self.isotonic_x is not None:
            return np.interp(logit, self.isotonic_x, self.isotonic_y)
        return _sigmoid(logit)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "QualityModel":
        values = dict(raw)
        if values.get("platt") is not None:
            values["platt"] = tuple(values["platt"])
        return cls(**values)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _fit_calibrator(method: str, logit: np.ndarray, y: np.ndarray) -> QualityModel:
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    model = QualityModel(weights_version="", method=method)
    if method == "platt":
        fitted = LogisticRegression(C=1e4, max_iter=1000).fit(logit.reshape(-1, 1), y)
        model.platt = (float(fitted.coef_[0][0]), float(fitted.intercept_[0]))
        if model.platt[0] <= 0:
            # A non-positive slope would reverse every signal; keep the configured direction.
            model.platt = (1e-6, model.platt[1])
    elif method == "isotonic":
        fitted = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(logit, y)
        model.isotonic_x = [float(v) for v in fitted.X_thresholds_]
        model.isotonic_y = [float(v) for v in fitted.y_thresholds_]
    return model


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(total)


def _held_out_metrics(method: str, logit: np.ndarray, y: np.ndarray, folds: int) -> dict[str, float | None]:
    """Brier score and ECE of predictions each made by a calibrator fit without that trace."""
    if folds < 2:
        return {"brier_held_out": None, "ece_held_out": None}
    from sklearn.model_selection import StratifiedKFold

    held_out = np.empty(len(y))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    for train, test in splitter.split(logit.reshape(-1, 1), y):
        held_out[test] = _fit_calibrator(method, logit[train], y[train]).predict(logit[test])
    return {"brier_held_out": float(np.mean((held_out - y) ** 2)), "ece_held_out": expected_calibration_error(held_out, y)}


def fit_quality_model(signals: pl.DataFrame, config: ScoringConfig) -> QualityModel:
    """Calibrate the configured logit on human-reviewed traces; held-out metrics by k-fold CV."""
    reviewed = signals.filter(pl.col("reviewed") & pl.col("review_good").is_not_null())
    logit = reviewed.select(signal_logit(config)).to_series().to_numpy()
    y = reviewed.get_column("review_good").cast(pl.Int8).to_numpy()
    n, n_bad = len(y), int((y == 0).sum())
    uncalibrated = _sigmoid(logit)
    metrics: dict[str, float | None] = {
        "brier_uncalibrated": float(np.mean((uncalibrated - y) ** 2)) if n else None,
        "ece_uncalibrated": expected_calibration_error(uncalibrated, y) if n else None,
    }
    if config.calibration == "none" or n < config.min_reviewed or n_bad == 0 or n_bad == n:
        note = (
            "calibration disabled in configs/scoring.yaml"
            if config.calibration == "none"
            else f"uncalibrated: {n} reviewed traces ({n_bad} bad); need >= {config.min_reviewed} with both outcomes"
        )
        return QualityModel(config.weights_version, "none", n_reviewed=n, n_reviewed_bad=n_bad, metrics=metrics, note=note)

    folds = min(config.calibration_folds, n_bad, n - n_bad)
    metrics.update(_held_out_metrics(config.calibration, logit, y, folds))
    model = _fit_calibrator(config.calibration, logit, y)
    model.weights_version = config.weights_version
    model.n_reviewed, model.n_reviewed_bad = n, n_bad
    model.metrics = metrics
    model.note = f"{config.calibration} calibration on {n} reviewed traces ({n_bad} bad), {folds}-fold held-out metrics"
    return model


def score_traces(signals: pl.DataFrame, model: QualityModel, config: ScoringConfig) -> pl.DataFrame:
    """Add ``logit``, ``p_good_signals`` (signals only), ``p_good`` (human review wins) and
    ``vetoed``: an output with an explicit negative signal is never kept as it is, whatever its
    score (an edit, not the output, is then the example; the output feeds the negative sets)."""
    logit = signals.select(signal_logit(config)).to_series().to_numpy()
    p_signals = pl.Series("p_good_signals", model.predict(logit), dtype=pl.Float64)
    veto = pl.any_horizontal([pl.col(name) for name in config.veto_signals]) if config.veto_signals else pl.lit(False)
    return signals.with_columns(pl.Series("logit", logit, dtype=pl.Float64), p_signals).with_columns(
        veto.alias("vetoed"),
        pl.when(pl.col("review_good").is_not_null())
        .then(pl.col("review_good").cast(pl.Float64))
        .otherwise(pl.col("p_good_signals"))
        .alias("p_good"),
        pl.lit(model.weights_version).alias("weights_version"),
    )
