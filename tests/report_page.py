"""Test helper: what a Snakemake HTML report shows in a browser (headless Chromium).

The report is a single page rendered by JavaScript from data embedded in it, so its
listing only exists once a browser ran it. Without Chromium the checks skip, saying so
(.ci/run installs the Debian package ``chromium``).
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest


def chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def page_text(report: Path, tmp: Path, script: str | None = None) -> str:
    """The visible text of the report after its JavaScript ran, in headless Chromium;
    ``script`` runs after the page has loaded (what a click would do)."""
    browser = chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium; .ci/run does)")
    page = report
    if script:
        page = tmp / f"{report.stem}_scripted.html"
        src = report.read_text()
        i = src.rfind("</body>")
        page.write_text(src[:i] + f'<script>window.addEventListener("load", () => setTimeout(() => {{{script}}}, 0));'
                        f"</script>" + src[i:])
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run",
                        f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=15000", "--dump-dom",
                        page.resolve().as_uri()], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "<body" in r.stdout, r.stderr[-3000:]
    body = r.stdout[r.stdout.find("<body"):]
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", body, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def check_report(report: Path, tmp: Path, files: list[str], categories: list[str]) -> None:
    """The report's menu lists the categories, and its search over every result lists the files."""
    menu = page_text(report, tmp)
    assert "Snakemake Report" in menu and "GradES harness run of the profile smoke" in menu, menu[:2000]
    for c in categories:
        assert c in menu, f"category {c!r} not in the report's menu: {menu[:2000]}"
    listed = page_text(report, tmp, 'app.setView({navbarMode: "searchresults", searchTerm: "re:."})')
    missing = [f for f in files if f not in listed]
    assert not missing, f"the report does not list {missing}: {listed[:3000]}"
