"""MLflow tracking for the assets: SQLite under LOOP_HOME by default, any backend store by URI."""

import dagster as dg

from loop_pipeline.core.tracking import TrackingTarget


class MlflowTracking(dg.ConfigurableResource):
    """``tracking_uri``: sqlite:///..., postgresql://..., or an MLflow server; ``artifact_root``:
    where new experiments keep their artifacts (a file:// folder or an object store URL)."""

    tracking_uri: str
    artifact_root: str

    def target(self) -> TrackingTarget:
        return TrackingTarget(self.tracking_uri, self.artifact_root)
