"""The report of a batch run, opened in headless Chromium: its tables, inline SVG plots and inline overlays render,
and it fetches nothing."""
from __future__ import annotations

import pytest

from toolkit.runs import run

from test_runs import vit_scenes

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"


def test_report_renders_in_chromium_with_everything_inline(tmp_path):
    from playwright.sync_api import sync_playwright

    config = vit_scenes(tmp_path, count=8, methods=["generic", "rollout"])
    run(config)
    report = tmp_path / "out" / "report.html"
    requests = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("request", lambda request: requests.append(request.url))
        page.goto(report.as_uri())
        summary = page.locator("table").first.inner_text()
        plots = page.locator("svg").count()
        polylines = page.locator("svg polyline").count()
        images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
    assert "generic" in summary and "rollout" in summary and "±" in summary
    assert plots >= 5 and polylines == 2  # deletion curves of both methods, and one bar chart per metric
    assert len(images) == 2 * 2 * 3 and all(done and width == 64 for done, width in images)  # best and worst 3
    assert (tmp_path / "report.png").stat().st_size > 10_000
