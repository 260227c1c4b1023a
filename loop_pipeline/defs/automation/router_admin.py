"""The running router, as the champion_reload_sensor sees it: ``POST {url}/admin/reload``."""


from typing import Any, Optional

import dagster as dg
from pydantic import Field


class RouterUnreachable(Exception):
    """The router did not answer the reload (down, refused the key, or failed to load)."""


class RouterAdmin(dg.ConfigurableResource):
    """``url``: the router (LOOP_ROUTER_URL), None when no router runs beside this instance. Its
    key (LOOP_ROUTER_ADMIN_KEY) is read from the settings when a reload is sent, so it never shows
    in the resource's config."""

    url: Optional[str] = Field(default=None, description="The running router, e.g. http://127.0.0.1:8080 (LOOP_ROUTER_URL).")

    def reload(self, timeout_s: float) -> dict[str, Any]:
        """Ask the router to look at the champion alias now; its watcher status once it is done."""
        import httpx

        from loop_pipeline.settings import LoopSettings

        if not self.url:
            raise RouterUnreachable("no router URL (LOOP_ROUTER_URL is not set)")
        key = LoopSettings().router_admin_key
        headers = {"authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        target = f"{self.url.rstrip('/')}/admin/reload"
        try:
            response = httpx.post(target, headers=headers, timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise RouterUnreachable(f"POST {target}: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 401:
            raise RouterUnreachable(f"POST {target}: 401, the router refused the key (LOOP_ROUTER_ADMIN_KEY)")
        try:
            status = response.json()
        except ValueError as exc:
            raise RouterUnreachable(f"POST {target}: {response.status_code}, not JSON: {response.text[:200]!r}") from exc
        # 200, or 500 when the new version failed to load: both carry the watcher's status.
        if not isinstance(status, dict) or "version" not in status:
            raise RouterUnreachable(f"POST {target}: {response.status_code}: {str(status)[:300]}")
        return status
