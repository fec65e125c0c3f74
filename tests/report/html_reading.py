"""Reading a report page back in tests: its tables, every reference it could fetch, its sections."""

from __future__ import annotations

import re
from html.parser import HTMLParser

# Attributes through which a page can make the browser fetch something.
FETCHING = {"src", "href", "xlink:href", "srcset", "action", "formaction", "poster", "data", "background",
            "manifest", "ping", "codebase", "cite", "longdesc", "icon"}
CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]*)|@import\s+['\"]?([^'\";\s]*)", re.I)


class Page(HTMLParser):
    """tables: id -> {"head": [...], "rows": [[(attrs, text), ...], ...], "row_attrs": [...]};
    references: every fetching attribute value and CSS url() / @import target; tags: (tag, attrs) in order."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, dict] = {}
        self.references: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self._table: str | None = None
        self._cell: list | None = None
        self._in_style = False
        self._in_head = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        self.tags.append((tag, a))
        for k, v in a.items():
            if k in FETCHING:
                self.references.append(v)
            if k == "style":
                self.references += [m.group(1) or m.group(2) for m in CSS_URL.finditer(v)]
        if tag == "style":
            self._in_style = True
        if tag == "thead":
            self._in_head = True
        if tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = {"head": [], "rows": [], "row_attrs": []}
        elif self._table and tag == "tr":
            self._row_attrs = a
            self._row: list = []
        elif self._table and tag in ("td", "th"):
            self._cell = [a, ""]

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False
        if tag == "thead":
            self._in_head = False
        if not self._table:
            return
        if tag in ("td", "th") and self._cell is not None:
            self._row.append((self._cell[0], self._cell[1].strip()))
            self._cell = None
        elif tag == "tr":
            t = self.tables[self._table]
            if self._in_head:
                t["head"] = [text for _, text in self._row]
            else:
                t["rows"].append(self._row)
                t["row_attrs"].append(self._row_attrs)
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._in_style:
            self.references += [m.group(1) or m.group(2) for m in CSS_URL.finditer(data)]
        if self._cell is not None:
            self._cell[1] += data

    def table(self, table_id: str) -> list[dict]:
        """Rows as {header: text} plus ``_attrs`` (header -> td attributes) and ``_row`` (tr attributes)."""
        t = self.tables[table_id]
        return [{**{h: text for h, (_, text) in zip(t["head"], row, strict=True)},
                 "_attrs": {h: attrs for h, (attrs, _) in zip(t["head"], row, strict=True)}, "_row": ra}
                for row, ra in zip(t["rows"], t["row_attrs"], strict=True)]


def offline_violations(html: str) -> list[str]:
    """References that would leave the page: anything but ``data:`` URIs and ``#fragments``."""
    page = Page(html)
    bad = [r for r in page.references if r.strip() and not r.strip().startswith(("data:", "#"))]
    bad += [f"<{tag}>" for tag, _ in page.tags if tag in ("link", "iframe", "object", "embed", "base")]
    return bad
