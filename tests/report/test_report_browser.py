"""The report in a real browser: headless Chromium (Debian's `chromium`) driven over the DevTools pipe (cdp.py).

The page's script ran (it marks the body ready and puts a sort button in every header), every section, plot
and image is there and loaded, no console error and no request left the page; sorting, filtering and the
provenance panel work when clicked; a screenshot is saved. Skipped where Chromium is not installed.
"""

from __future__ import annotations

import base64

import pytest
from cdp import Browser, chromium
from report_stores import fake_claims, mixed_store

from mmsec.report.page import build_report

pytestmark = pytest.mark.skipif(chromium() is None, reason="Chromium is not installed; `apt-get install -y chromium` "
                                "(Debian) lets this test open the report in a real browser")


@pytest.fixture(scope="module")
def opened(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    out = folder / "report.html"
    build_report(mixed_store(folder / "store"), out, claims=fake_claims())
    browser = Browser(chromium())
    try:
        browser.open(out)
        yield browser, out
    finally:
        browser.close()


def _console_errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            out.append(str(p["exceptionDetails"].get("exception", {}).get("description") or p["exceptionDetails"]))
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
            out.append(" ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
        elif method == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
            out.append(p["entry"]["text"])  # (a refused request, a CSP violation, a broken image)
    return out


def test_the_page_renders_offline_without_errors(opened):
    browser, out = opened
    assert browser.js("document.body.dataset.ready") == "1"  # the script ran to its end
    headers = browser.js("document.querySelectorAll('table.results thead th').length")
    assert headers > 20 and browser.js("document.querySelectorAll('th > button.sort').length") == headers
    assert browser.js("Array.from(document.querySelectorAll('section.spec h2'), h => h.textContent)") == [
        "attack_defense", "bars", "curve", "matrix", "roc"]
    assert browser.js("document.querySelectorAll('#claims tbody tr').length") == 3
    assert browser.js("Array.from(document.querySelectorAll('figure.plot svg'), s => s.getBBox().width > 100)") == \
        [True] * 5  # every plot rendered with a size
    images = browser.js("Array.from(document.images, i => i.complete && i.naturalWidth > 0)")
    assert images == [True] * 12
    requests = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    assert requests and all(u == out.resolve().as_uri() or u.startswith("data:") for u in requests), requests
    assert _console_errors(browser.events) == []
    shot = base64.b64decode(browser.page("Page.captureScreenshot", {"format": "png"})["data"])
    (out.parent / "report.png").write_bytes(shot)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000


def test_sorting_filtering_and_provenance_work_when_clicked(opened):
    browser, _ = opened
    column = """(() => { const t = document.getElementById('table-spec-curve');
        const col = Array.from(t.tHead.rows[0].cells).findIndex(th => th.textContent.startsWith('robust_accuracy'));
        t.tHead.rows[0].cells[col].querySelector('button').click();
        return Array.from(t.tBodies[0].rows, r => Number(r.cells[col].dataset.v)); })()"""
    ascending = browser.js(column)
    assert len(ascending) == 8 and ascending == sorted(ascending) and ascending[0] < ascending[-1]
    assert browser.js(column) == sorted(ascending, reverse=True)  # a second click reverses
    shown = browser.js("""(() => { const box = document.querySelector('input[data-table="table-spec-curve"]');
        box.value = 'tecoa 8/255'; box.dispatchEvent(new Event('input'));
        const rows = document.getElementById('table-spec-curve').tBodies[0].rows;
        return [Array.from(rows).filter(r => !r.hidden).length,
                document.querySelector('.count[data-table="table-spec-curve"]').textContent]; })()""")
    assert shown == [1, "1 of 8 rows"]
    panel = browser.js("""(() => { const td = document.querySelector('#table-spec-bars td.prov'); td.click();
        const p = document.getElementById('prov'); return [p.hidden, p.textContent]; })()""")
    assert panel[0] is False
    assert "cell hash" in panel[1] and "spec-hash-of-bars"[:12] in panel[1] and "threat model" in panel[1]
