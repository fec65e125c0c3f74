"""`mmsec report` (issue 19): the page built from synthetic stores written through the real store API.

The plot chooser picks curve / matrix / attack x defense / ROC / bars for the grids built to need each; tables
carry the seed means and t intervals (recomputed here); every number's provenance is in the page once; the page
references nothing outside itself; images are inlined within their caps; a 1,000-cell store makes a bounded
page; the claims section renders claim results; the CLI writes the file and fails in one line.
"""

from __future__ import annotations

import json
import math
import re
import statistics

import pytest
from html_reading import Page, offline_violations
from report_stores import DEFINITIONS, SEED_OFFSETS, Writer, big_store, fake_claims, mixed_store, png, robust

from mmsec.cli import main
from mmsec.report.chooser import choose_plot
from mmsec.report.galleries import gallery
from mmsec.report.page import build_report
from mmsec.report.plots import _curves
from mmsec.report.store_view import read_specs
from mmsec.runs.results import query

SPECS = ("attack_defense", "bars", "curve", "matrix", "roc")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return mixed_store(tmp_path_factory.mktemp("mixed") / "store")


@pytest.fixture(scope="module")
def html(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("page") / "report.html"
    info = build_report(store, out, claims=fake_claims())
    assert (info.specs, info.cells, info.images) == (5, 22, 12 + 0)  # 16 PNGs of `curve`, capped at 12
    return out.read_text()


def test_the_chooser_picks_the_plot_each_grid_needs(store):
    choices = {v.name: choose_plot(v) for v in read_specs(store)}
    assert {name: c.kind for name, c in choices.items()} == {
        "attack_defense": "attack_defense", "bars": "bars", "curve": "curve", "matrix": "matrix", "roc": "roc"}
    assert choices["curve"].x == "eps" and choices["curve"].metrics == ("robust_accuracy", "clean_accuracy")
    assert (choices["matrix"].rows, choices["matrix"].cols, choices["matrix"].metrics) == ("model", "target", ("asr",))
    assert (choices["attack_defense"].rows, choices["attack_defense"].cols) == ("attack", "defense")
    assert choices["attack_defense"].metrics == ("backdoor_asr",)
    assert choices["bars"].metrics[0] == "robust_accuracy"


def test_curves_draw_one_line_per_defense_with_the_seed_intervals(store):
    view = next(v for v in read_specs(store) if v.name == "curve")
    fig, notes = _curves(view, choose_plot(view))
    ax = fig.axes[0]  # robust_accuracy
    assert ax.get_title() == "robust_accuracy" and notes == []
    bars = {c.get_label(): c for c in ax.containers}
    assert set(bars) == {"none", "tecoa"}  # alpha = eps/4 is a function of eps: it splits no line
    line, _, (segments,) = bars["none"].lines
    assert list(line.get_xdata()) == pytest.approx([1 / 255, 2 / 255, 4 / 255, 8 / 255])
    values = [robust(2 / 255, "none") + o for o in SEED_OFFSETS]
    mean, half = statistics.mean(values), 4.302652729911275 * statistics.stdev(values) / math.sqrt(3)
    (x, low), (_, high) = segments.get_segments()[1]
    assert x == pytest.approx(2 / 255) and (low, high) == pytest.approx((mean - half, mean + half))


def test_the_table_holds_the_seed_means_and_intervals(html):
    rows = Page(html).table("table-spec-curve")
    assert len(rows) == 8  # 2 defenses x 4 eps; three seeds each aggregated
    row = next(r for r in rows if r["defense"] == "none" and r["eps"] == "2/255")
    values = [robust(2 / 255, "none") + o for o in SEED_OFFSETS]
    mean = statistics.mean(values)
    half = 4.302652729911275 * statistics.stdev(values) / math.sqrt(3)  # t_{0.975, 2}
    assert float(row["_attrs"]["robust_accuracy"]["data-v"]) == pytest.approx(mean)
    assert row["robust_accuracy"] == f"{mean:.3f} [{mean - half:.3f}, {mean + half:.3f}]"
    assert row["n"] == "3" and len(row["_row"]["data-runs"].split()) == 3
    bars = Page(html).table("table-spec-bars")  # no seed axis: one row per run, its seed, no interval
    assert [r["seed"] for r in bars] == ["0", "0"] and "n" not in bars[0] and "[" not in bars[0]["robust_accuracy"]


def test_every_number_carries_its_provenance_once(html, store):
    blob = json.loads(re.search(r'<script type="application/json" id="mmsec-provenance">(.*?)</script>', html,
                                re.S).group(1))
    s = blob["strings"]
    for r in query(store):
        run = blob["runs"][str(r["run_id"])]
        value, definition, version, threat, higher = run["m"][r["metric"]]
        assert (value, s[definition], version, s[threat], higher) == (
            r["value"], r["definition"], r["metric_version"], r["threat_model"], int(r["higher_is_better"]))
        assert (s[run["sh"]], run["ch"], run["seed"], s[run["mv"]], s[run["tv"]]) == (
            r["spec_hash"], r["cell_hash"], r["seed"], r["mmsec_version"], r["torch_version"])
        assert run["wall"] == pytest.approx(r["wall_time_s"]) and run["at"] == r["finished_at"]
    page = Page(html)
    for table in (t for t in page.tables if t.startswith("table-spec-")):
        for row in page.table(table):
            for attrs in row["_attrs"].values():
                if "data-m" in attrs:  # each clickable number names runs that hold its metric
                    assert all(attrs["data-m"] in blob["runs"][i]["m"] for i in row["_row"]["data-runs"].split())
    assert html.count(DEFINITIONS["robust_accuracy"][0]) == 1  # a definition is stored once, not per number


def test_the_page_requests_nothing(html):
    assert offline_violations(html) == []
    assert offline_violations(html.replace("<main>", '<main><img src="https://example.org/x.png">'))  # (it can fail)
    assert "default-src 'none'" in html  # and the browser is told to refuse any request
    page = Page(html)
    assert sum(tag == "svg" for tag, _ in page.tags) == len(SPECS)  # one plot per spec
    assert all(a["src"].startswith("data:image/png;base64,") for tag, a in page.tags if tag == "img")
    assert not re.search(r"<\?xml|<!DOCTYPE svg|<metadata", html)


def test_images_are_inlined_within_the_caps_and_checked(html, tmp_path):
    assert "4 more image(s) of this spec not shown" in html  # `curve` has 16, the cap is 12
    captions = [m for m in re.findall(r"<figcaption>([^<]*seed \d[^<]*)</figcaption>", html)]
    assert len(captions) == 12 and all("seed 0" in c for c in captions[:8])  # each cell's first seed first
    w = Writer(tmp_path / "S")
    w.add("g", 0, {"robust_accuracy": 0.5}, artifacts={"examples.png": png((255, 0, 0))})
    w.add("g", 1, {"robust_accuracy": 0.4}, artifacts={"examples.png": png((0, 255, 0))})
    w.close()
    (view,) = read_specs(tmp_path / "S")
    assert gallery(view, tmp_path / "S").shown == 2
    (tmp_path / "S" / view.artifacts[1]["path"]).write_bytes(png((0, 0, 255)))  # changed after its run
    checked = gallery(view, tmp_path / "S")
    assert checked.shown == 1 and "changed since its run" in checked.html
    assert gallery(view, tmp_path / "S", max_images=1).left_out == 1


def test_a_thousand_cells_build_into_a_bounded_page(tmp_path):
    info = build_report(big_store(tmp_path / "big"), tmp_path / "big.html", claims=[])
    html = (tmp_path / "big.html").read_text()
    assert info.cells == 1000 and len(Page(html).table("table-spec-big")) == 1000
    assert info.bytes < 2_500_000  # measured 1.0 MB
    assert "90 more lines (of 100) not drawn" in html  # 4 models x 5 defenses x 5 step counts, against eps


def test_the_claims_section_shows_effects_bars_and_verdicts(html):
    rows = Page(html).table("claims-table")
    assert [r["verdict"] for r in rows] == ["reproduced", "inconclusive", "not run"]
    first = rows[0]
    assert first["effect: mean [95% interval]"].startswith("+0.617 [") and "n=3" in first["effect: mean [95% interval]"]
    assert "seed 1: +0.640" in first["effect: mean [95% interval]"] and first["bar"] == ">= 0.5 points"
    assert '<a href="#spec-curve">quickstart.yaml (dev)</a>' in html  # the claim's spec is on the page
    assert "(1 seed)" in rows[1]["effect: mean [95% interval]"] and "missing: 3 of 3 seeds" in rows[2][
        "effect: mean [95% interval]"]
    assert 'class="verdict ok">reproduced' in html and 'class="verdict none">not run' in html


def test_the_cli_writes_the_report_with_the_ledger_and_fails_in_one_line(store, tmp_path, capsys):
    from mmsec.claims import CLAIMS

    out = tmp_path / "r.html"
    assert main(["report", "--results-dir", str(store), "--out", str(out), "--spec", "bars", "--spec", "roc"]) == 0
    assert str(out) in capsys.readouterr().out
    html = out.read_text()
    assert 'id="spec-bars"' in html and 'id="spec-roc"' in html and 'id="spec-curve"' not in html
    verdicts = {r["claim"].split()[0]: r["verdict"] for r in Page(html).table("claims-table")}
    assert verdicts == {c.name: "not run" for c in CLAIMS}  # the ledger, read from this store (none of its specs)
    for argv, words in ((["--results-dir", str(tmp_path / "none")], "no results store"),
                        (["--results-dir", str(store), "--out", str(tmp_path / "no" / "r.html")], "does not exist"),
                        (["--results-dir", str(store), "--spec", "curv"], "no runs of that spec")):
        assert main(["report", *argv]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
