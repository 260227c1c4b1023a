"""MLflow tracking for the assets: SQLite under LOOP_HOME by default, any backend store by URI."""

import dagster as dg

from loop_pipeline.core.tracking import TrackingTarget


class MlflowTracking(dg.ConfigurableResource):
    """``tracking_uri``: sqlite:///..., postgresql://..., or an MLflow server; ``artifact_root``:
    where new experiments keep their artifacts (a file:// folder or an object store URL)."""

    tracking_uri: str
    artifact_root: str

    @classmethod
    def from_target(cls, target: TrackingTarget) -> "MlflowTracking":
        """The resource for a target, e.g. ``MlflowTracking.from_target(LoopSettings().tracking())``."""
        return cls(tracking_uri=target.tracking_uri, artifact_root=target.artifact_root)

    def target(self) -> TrackingTarget:
        return TrackingTarget(self.tracking_uri, self.artifact_root)
