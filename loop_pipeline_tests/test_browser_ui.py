"""The UIs in a real browser: headless Chromium (Debian's, installed by `make browser`, driven by
playwright) opens the Dagster webserver and the MLflow UI, run as real subprocesses on a
demo-sized LOOP_HOME (the whole asset graph materialized on toy traffic, a tiny model trained,
evaluated, registered and aliased `champion`), and finds the asset graph with its checks and the
registered model with its alias. Screenshots (and the servers' logs) are kept as test artifacts
under ``$LOOP_TEST_ARTIFACTS/browser`` (default ``.test-artifacts/browser``)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Iterator

import pytest

from loop_pipeline_tests.browser_support import (
    MODEL_NAME,
    STRAY_SETTINGS,
    DemoInstance,
    artifacts_dir,
    build_demo_instance,
    chromium_path,
    dagster_ui,
    mlflow_ui,
)

pytestmark = pytest.mark.slow
TIMEOUT_MS = 60_000  # a page's first render on a busy 2-core machine
DEMO_GROUPS = {"ingest", "scoring", "datasets", "training", "evaluation"}  # what the demo materializes (and more may exist)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[DemoInstance]:
    """What `make demo` leaves, at toy size, built once for the module."""
    root = tmp_path_factory.mktemp("browser_demo")
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("LOOP_") and n != "LOOP_TEST_ARTIFACTS"] + list(STRAY_SETTINGS):
            patch.delenv(name, raising=False)
        patch.setenv("LOOP_HOME", str(root / "loop_home"))
        patch.setenv("LOOP_CONFIG_DIR", str(root / "configs"))
        # Set (not only deleted), so that undoing it removes what open_instance() writes there.
        patch.setenv("DAGSTER_HOME", str(root / "loop_home" / "dagster"))
        instance = build_demo_instance(root)
    yield instance


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium. Missing: fails in CI (CI=true), skips elsewhere, naming the command."""
    executable = chromium_path()
    if executable is None:
        message = "chromium not found on PATH: `make browser` installs it (Debian package chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: the browser test must run)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def visit(page, url: str, screenshot: Path, check: Callable[[], None], greeting_wait_ms: int = 0, dagster: bool = True) -> None:
    """Open ``url``, run ``check`` (playwright expectations), and save a screenshot either way."""
    page.goto(url)
    try:
        if dagster:
            _dismiss_dagster_greeting(page, greeting_wait_ms)
        check()
        if dagster:
            _dismiss_dagster_greeting(page, 0)
            # The nodes' statuses, for the screenshot (the MLflow UI polls without pause: never idle).
            page.wait_for_load_state("networkidle")
    finally:
        page.screenshot(path=str(screenshot))
        print(f"screenshot: {screenshot}")


def _dismiss_dagster_greeting(page, wait_ms: int) -> None:
    """The Dagster UI greets a new browser profile with a "Join the Dagster community" dialog
    (on its first page, once its data has loaded); it would cover the screenshots."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    greeting = page.get_by_text("Join the Dagster community", exact=True)
    if wait_ms:
        try:
            greeting.wait_for(state="visible", timeout=wait_ms)
        except PlaywrightTimeout:
            return  # this profile was not greeted
    if greeting.is_visible():
        page.get_by_role("button", name="Skip").click()
        greeting.wait_for(state="hidden")


def _graph_name(name: str) -> re.Pattern[str]:
    """An asset's name as a zoomed-out graph node shows it: whole, or cut in the middle with an ellipsis."""
    return re.compile(rf"^\s*({re.escape(name)}|{re.escape(name[:5])}\w*…\w*{re.escape(name[-5:])})\s*$")


def test_dagster_ui_shows_the_asset_graph_with_its_checks(demo: DemoInstance, page):
    from playwright.sync_api import expect

    folder = artifacts_dir()
    assert DEMO_GROUPS <= set(demo.groups), demo.groups
    groups = sorted(demo.groups)
    assert demo.checks["holdout_eval_reaches_target_at_min_coverage"], "the demo-sized candidate did not pass the gate"
    with dagster_ui(demo, folder / "dagster-webserver.log") as url:
        # The global lineage with every group expanded: each group and each asset of the graph.
        expanded = ",".join(f"global@global:{group}" for group in groups)

        def whole_graph() -> None:
            for group in groups:
                expect(page.get_by_text(group, exact=True).first).to_be_visible()
            for assets in demo.groups.values():
                for asset in assets:
                    expect(page.get_by_text(_graph_name(asset))).to_be_visible()

        visit(page, f"{url}/asset-groups?expanded={expanded}", folder / "dagster-asset-graph.png", whole_graph, greeting_wait_ms=15_000)

        # Each group's graph at full size: asset names, and the tally of checks the demo ran, all passed.
        for group in groups:
            def group_graph(group: str = group) -> None:
                for asset in demo.groups[group]:
                    expect(page.get_by_text(asset, exact=True).first).to_be_visible()
                expect(page.get_by_text(re.compile(r"^\s*Loading"))).to_have_count(0)  # every node's live data
                for asset in demo.groups[group]:
                    names = demo.asset_checks.get(asset, [])
                    if names and all(demo.checks.get(name) for name in names):
                        expect(page.get_by_text(f"{len(names)} / {len(names)} Passed").first).to_be_visible()

            visit(page, f"{url}/locations/loop_pipeline/asset-groups/{group}", folder / f"dagster-group-{group}.png", group_graph)

        # The checks tab of an ingest asset and of the evaluation: every check by name, each succeeded.
        for asset in ("raw_traces", "holdout_eval"):
            names = demo.asset_checks[asset]
            assert names and all(demo.checks[name] for name in names), {n: demo.checks.get(n) for n in names}

            def checks_tab(asset: str = asset, names: list[str] = names) -> None:
                expect(page.get_by_text(f"Checks ({len(names)})")).to_be_visible()
                for name in names:  # the list cuts long names in the middle and keeps the whole name as the title
                    expect(page.get_by_title(name, exact=True).first).to_be_visible()
                expect(page.get_by_text("Succeeded", exact=True)).to_have_count(len(names))  # one status per check

            visit(page, f"{url}/assets/{asset}?view=checks", folder / f"dagster-{asset}-checks.png", checks_tab)


def test_mlflow_ui_shows_the_registered_model_with_alias_champion(demo: DemoInstance, page):
    from playwright.sync_api import expect

    folder = artifacts_dir()
    with mlflow_ui(demo, folder / "mlflow-ui.log") as url:

        def registered_model() -> None:
            expect(page.get_by_role("heading", name=MODEL_NAME)).to_be_visible()
            row = page.get_by_role("row").filter(has=page.get_by_role("link", name=f"Version {demo.champion}", exact=True))
            expect(row).to_have_count(1)
            expect(row.get_by_text("champion")).to_be_visible()

        visit(page, f"{url}/#/models/{MODEL_NAME}", folder / "mlflow-registered-model.png", registered_model, dagster=False)

        def version_page() -> None:
            expect(page.get_by_text(f"Version {demo.champion}").first).to_be_visible()
            expect(page.get_by_text("champion", exact=False).first).to_be_visible()

        visit(page, f"{url}/#/models/{MODEL_NAME}/versions/{demo.champion}", folder / "mlflow-champion-version.png", version_page, dagster=False)
