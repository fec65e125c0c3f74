"""``mmsec report``: one self-contained HTML page built from the results store.

The page: the claims of the ledger with their verdicts (:mod:`mmsec.report.claims_section`), a table of
contents, then one collapsible section per spec with the plot that fits its grid
(:mod:`mmsec.report.chooser`, :mod:`mmsec.report.plots`), its results table (:mod:`mmsec.report.tables`) and
its image artifacts (:mod:`mmsec.report.galleries`); every number's provenance is in one JSON blob
(:mod:`mmsec.report.provenance`) that the inline script shows on a click.

Self-contained and offline: inline CSS and script (``static/``), plots as inline SVG, images as ``data:``
URIs, system fonts; a Content-Security-Policy ``default-src 'none'`` makes the browser refuse any request the
page might still make. The store is only read (:mod:`mmsec.report.store_view`).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from ..version import __version__
from .chooser import NONE, choose_plot
from .claims_section import claims_section
from .galleries import MAX_BYTES, MAX_IMAGES, gallery
from .plots import render_plot
from .provenance import Provenance
from .store_view import SpecView, read_specs
from .tables import results_table

logger = logging.getLogger(__name__)

TOTAL_IMAGE_BYTES = 8_000_000  # images of the whole page (base64 adds a third): the file stays well under 20 MB
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


@dataclass
class ReportInfo:
    """What :func:`build_report` wrote."""

    path: Path
    bytes: int
    specs: int
    cells: int
    images: int


def build_report(results_dir: str | Path, out: str | Path, specs: Sequence[str] | None = None,
                 claims: Sequence[Any] | None = None, claims_preset: str | None = "dev",
                 claims_seeds: int = 3, recipes: str | Path | None = None) -> ReportInfo:
    """Write the report of the store in ``results_dir`` to ``out`` (replaced whole, never half-written).

    ``specs``: only these specs (default: all, sorted). ``claims``: the claim results to show (objects with
    :class:`mmsec.claims.ClaimResult`'s fields); None evaluates the ledger from the store at ``claims_preset``
    over ``claims_seeds`` seeds with the recipes in ``recipes`` (:func:`mmsec.claims.evaluate_claims`: it reads,
    never runs).
    """
    results_dir, out = Path(results_dir), Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder; give the path of the HTML file to write")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {out.parent} does not exist")
    views = read_specs(results_dir, list(specs) if specs else None)
    problem = None
    if claims is None:
        claims, problem = _evaluate_claims(results_dir, claims_preset, claims_seeds, recipes)
    html, images = render_page(results_dir, views, claims, claims_preset, problem)
    data = html.encode("utf-8")
    try:
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as e:
        raise ValueError(f"--out {out}: cannot write in {out.parent} ({e.strerror or e}); choose a writable path") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return ReportInfo(out, len(data), len(views), sum(len(v.groups) for v in views), images)


def _evaluate_claims(results_dir: Path, preset: str | None, seeds: int,
                     recipes: str | Path | None) -> tuple[list[Any], str | None]:
    """The ledger's results from the store; a ledger that cannot be read (no recipes folder here) is a note on
    the page, not a failed report."""
    from ..claims import evaluate_claims

    try:
        return evaluate_claims(results_dir, preset=preset, seeds=seeds, recipes=recipes), None
    except (OSError, ValueError) as e:
        logger.warning("claims not evaluated: %s", e)
        return [], str(e).splitlines()[0] if str(e) else type(e).__name__


def _anchor(name: str, taken: set[str]) -> str:
    base = "spec-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "x")
    anchor, k = base, 2
    while anchor in taken:
        anchor, k = f"{base}-{k}", k + 1
    taken.add(anchor)
    return anchor


def _static(name: str) -> str:
    return resources.files("mmsec.report").joinpath("static", name).read_text(encoding="utf-8")


def render_page(results_dir: str | Path, views: list[SpecView], claims: Sequence[Any], claims_preset: str | None,
                claims_problem: str | None = None) -> tuple[str, int]:
    """(the page's HTML, the number of images inlined)."""
    taken: set[str] = set()
    anchors = {v.name: _anchor(v.name, taken) for v in views}
    provenance = Provenance()
    sections, toc, images, budget = [], [], 0, TOTAL_IMAGE_BYTES
    for i, view in enumerate(views):
        provenance.add(view.rows)
        choice = choose_plot(view)
        svg, notes = render_plot(choice, view, results_dir, prefix=f"f{i}") if choice.kind != NONE else ("", [])
        pics = gallery(view, results_dir, max_images=MAX_IMAGES, max_bytes=min(MAX_BYTES, budget))
        budget -= pics.bytes
        images += pics.shown
        sections.append(_section(view, anchors[view.name], choice, svg, notes, pics.html))
        toc.append(f'<li><a href="#{anchors[view.name]}">{escape(view.name)}</a> <span class="sub">'
                   f"{len(view.groups)} cells · {escape(choice.kind)}</span></li>")
    n_cells = sum(len(v.groups) for v in views)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        '<header class="page"><h1>mmsec report</h1>',
        f"<p>results store <code>{escape(str(Path(results_dir).resolve()))}</code> · {len(views)} specs · "
        f"{n_cells} cells · built {when} by mmsec {escape(__version__)}</p></header><main>",
        claims_section(claims, anchors, claims_preset, claims_problem),
        '<nav id="toc"><h2>Contents</h2><button type="button" data-details="open">open all</button>'
        '<button type="button" data-details="close">close all</button><ol><li><a href="#claims">Claims</a></li>',
        *toc, "</ol></nav>", *sections, "</main>",
        '<aside id="prov" hidden aria-live="polite"></aside>',
        f'<script type="application/json" id="mmsec-provenance">{provenance.to_json()}</script>',
        f"<script>{_static('report.js')}</script>",
    ]
    head = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>mmsec report: {escape(Path(results_dir).name)}</title><style>{_static('report.css')}</style>"
            '</head><body data-ready="0">')
    return head + "\n".join(body) + "</body></html>\n", images


def _section(view: SpecView, anchor: str, choice: Any, svg: str, notes: list[str], pictures: str) -> str:
    seeds = sorted({s for g in view.groups for s in g["seeds"]})
    hashes = sorted({r["spec_hash"] for r in view.rows})
    facts = [f"task {', '.join(view.tasks) or '?'}", f"{len(view.groups)} cells", f"{view.n_runs} runs",
             f"seeds {', '.join(map(str, seeds))}" if len(seeds) <= 10 else f"{len(seeds)} seeds"]
    parts = [f'<section class="spec" id="{anchor}"><details open><summary><h2>{escape(view.name)}</h2>'
             f'<span class="sub">{escape(" · ".join(facts))}</span></summary><div class="body">']
    if hashes:
        parts.append(f'<p class="note">spec hash {", ".join(f"<code>{escape(h[:16])}</code>" for h in hashes)}'
                     + (" (the spec changed between runs)" if len(hashes) > 1 else "") + "</p>")
    if view.unfinished:
        counts: dict[str, int] = {}
        for u in view.unfinished:
            counts[u["status"]] = counts.get(u["status"], 0) + 1
        first = next((u for u in view.unfinished if u["error"]), None)
        parts.append('<p class="note warn">cells not finished: ' + ", ".join(f"{n} {s}" for s, n in counts.items())
                     + (f" (first error: {escape(first['error'])})" if first else "") + "</p>")
    if svg:
        caption = escape(choice.why) + "".join(f"; {escape(n)}" for n in notes)
        parts.append(f'<figure class="plot">{svg}<figcaption>{caption}</figcaption></figure>')
    elif notes:
        parts.append('<p class="note">' + "; ".join(escape(n) for n in notes) + "</p>")
    parts.append(results_table(view, f"table-{anchor}"))
    if pictures:
        parts.append(f"<h3>Images</h3>{pictures}")
    parts.append("</div></details></section>")
    return "\n".join(parts)


__all__ = ["CSP", "TOTAL_IMAGE_BYTES", "ReportInfo", "build_report", "render_page"]
