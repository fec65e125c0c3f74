// mmsec report: sortable and filterable tables, each number's provenance on click. Plain DOM, no library, no
// request: everything it reads is in the page (the provenance blob in <script id="mmsec-provenance">).
(function () {
  "use strict";
  const blob = document.getElementById("mmsec-provenance");
  const prov = blob ? JSON.parse(blob.textContent) : { strings: [], runs: {} };
  const S = prov.strings;

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  // -- sorting: numbers by data-v (full precision), text otherwise; empty cells last in both directions --
  function sortKey(td) {
    if (!td) return null;
    const v = td.dataset.v;
    if (v !== undefined && v !== "" && isFinite(Number(v))) return Number(v);
    const text = td.textContent.trim().toLowerCase();
    return text === "" ? null : text;
  }
  function compare(a, b) {
    if (typeof a === "number" && typeof b === "number") return a - b;
    if (typeof a === "number") return -1;
    if (typeof b === "number") return 1;
    return a < b ? -1 : a > b ? 1 : 0;
  }
  function sortBy(table, col, th) {
    const dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    for (const h of table.tHead.rows[0].cells) h.setAttribute("aria-sort", "none");
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    const body = table.tBodies[0];
    const keyed = Array.from(body.rows, (row, i) => [sortKey(row.cells[col]), i, row]);
    keyed.sort((a, b) => {
      if (a[0] === null || b[0] === null) return (a[0] === null) - (b[0] === null) || a[1] - b[1];
      return dir * compare(a[0], b[0]) || a[1] - b[1];
    });
    body.append(...keyed.map((k) => k[2]));
  }
  let buttons = 0;
  for (const table of document.querySelectorAll("table.results")) {
    Array.from(table.tHead.rows[0].cells).forEach((th, col) => {
      const button = el("button", th.textContent, { type: "button", class: "sort", title: "sort by " + th.textContent });
      th.textContent = "";
      th.appendChild(button);
      th.setAttribute("aria-sort", "none");
      button.addEventListener("click", () => sortBy(table, col, th));
      buttons += 1;
    });
  }

  // -- filtering: every word typed must appear in the row --
  for (const input of document.querySelectorAll("input.filter")) {
    const table = document.getElementById(input.dataset.table);
    const count = document.querySelector('.count[data-table="' + input.dataset.table + '"]');
    if (!table) continue;
    let texts = null;
    input.addEventListener("input", () => {
      const rows = Array.from(table.tBodies[0].rows);
      texts = texts || new Map(rows.map((r) => [r, r.textContent.toLowerCase()]));
      const terms = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      let shown = 0;
      for (const row of rows) {
        const ok = terms.every((t) => texts.get(row).includes(t));
        row.hidden = !ok;
        shown += ok ? 1 : 0;
      }
      const total = rows.length + (rows.length === 1 ? " row" : " rows");
      if (count) count.textContent = terms.length ? shown + " of " + total : total;
    });
  }

  // -- provenance: a click on a number opens the panel with its runs --
  const panel = document.getElementById("prov");
  function showProvenance(td) {
    const metric = td.dataset.m;
    const runIds = (td.parentElement.dataset.runs || "").split(" ").filter(Boolean);
    const runs = runIds.map((id) => [id, prov.runs[id]]).filter((r) => r[1] && r[1].m[metric]);
    panel.replaceChildren();
    const close = el("button", "close", { type: "button", class: "close" });
    close.addEventListener("click", () => { panel.hidden = true; });
    panel.appendChild(close);
    const spec = runs.length ? S[runs[0][1].spec] : "";
    panel.appendChild(el("h3", metric + " \u2014 " + spec));
    panel.appendChild(el("p", "shown: " + td.textContent.trim() + (runs.length > 1 ? " (" + runs.length + " runs)" : "")));
    const seen = new Set();
    for (const [, run] of runs) {
      const [, def, version, threat, higher] = run.m[metric];
      const key = [def, version, threat, higher].join("|");
      if (seen.has(key)) continue;
      seen.add(key);
      const dl = el("dl");
      for (const [k, v] of [["definition", S[def]], ["version", version],
                            ["direction", higher ? "higher is better" : "lower is better"], ["threat model", S[threat]]]) {
        dl.append(el("dt", k), el("dd", v));
      }
      panel.appendChild(dl);
    }
    const table = el("table");
    const head = el("tr");
    for (const h of ["run", "seed", "value", "spec hash", "cell hash", "mmsec", "torch", "wall s", "finished"]) {
      head.appendChild(el("th", h));
    }
    table.appendChild(head);
    for (const [id, run] of runs) {
      const tr = el("tr");
      const sh = S[run.sh];
      for (const [text, title] of [[id], [run.seed], [run.m[metric][0]], [sh.slice(0, 12), sh],
                                   [run.ch.slice(0, 16), run.ch], [S[run.mv]], [S[run.tv]],
                                   [run.wall], [run.at]]) {
        tr.appendChild(el("td", text === null ? "" : text, title ? { title: title } : {}));
      }
      table.appendChild(tr);
    }
    panel.appendChild(table);
    panel.hidden = false;
  }
  document.addEventListener("click", (ev) => {
    const td = ev.target.closest("td.prov");
    if (td && panel) showProvenance(td);
  });
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && panel) panel.hidden = true; });

  // -- open / close every section --
  for (const button of document.querySelectorAll("button[data-details]")) {
    button.addEventListener("click", () => {
      const open = button.dataset.details === "open";
      for (const d of document.querySelectorAll("section.spec > details")) d.open = open;
    });
  }

  document.body.dataset.sortButtons = String(buttons);
  document.body.dataset.ready = "1";
})();
