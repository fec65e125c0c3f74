"""Every number's provenance, once per page, as one JSON blob the page's script reads on demand.

A table cell names its runs (``data-runs`` on the row) and its metric (``data-m``); clicking it shows, per run,
the stored value at full precision, the seed, the spec and cell hashes, the mmsec and torch versions, the
compute time and when it finished, with the metric's definition, version and threat model. Strings that
repeat (definitions, threat models, versions, spec hashes) are stored once in ``strings`` and referred to by
index, so a 1,000-cell store stays a few hundred kB::

    {"strings": [...],
     "runs": {"<run_id>": {"spec": i, "sh": i, "ch": "<cell hash>", "seed": 0, "mv": i, "tv": i,
                           "wall": 1.2, "at": "<finished_at>",
                           "m": {"<metric>": [value, definition i, metric version, threat model i,
                                              higher is better 0/1]}}}}
"""

from __future__ import annotations

import json
import math


class Provenance:
    """Collects the provenance of the rows shown on a page; :meth:`to_json` is the blob."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self.runs: dict[int, dict] = {}

    def _s(self, text: object) -> int:
        key = "" if text is None else str(text)
        return self._index.setdefault(key, len(self._index))

    def add(self, rows: list[dict]) -> None:
        """Add :func:`mmsec.runs.results.query` rows (one per run and metric)."""
        for r in rows:
            wall = r.get("wall_time_s")
            run = self.runs.setdefault(int(r["run_id"]), {
                "spec": self._s(r["spec_name"]), "sh": self._s(r["spec_hash"]), "ch": r["cell_hash"],
                "seed": r["seed"], "mv": self._s(r["mmsec_version"]), "tv": self._s(r["torch_version"]),
                "wall": None if wall is None else round(float(wall), 3), "at": r.get("finished_at"), "m": {}})
            value = r["value"] if isinstance(r["value"], (int, float)) and math.isfinite(r["value"]) else None
            run["m"][r["metric"]] = [value, self._s(r["definition"]), r["metric_version"],
                                     self._s(r["threat_model"]), int(bool(r["higher_is_better"]))]

    @property
    def strings(self) -> list[str]:
        return list(self._index)

    def to_json(self) -> str:
        """The blob, safe inside ``<script type="application/json">`` (no ``<`` that could end the element)."""
        text = json.dumps({"strings": self.strings, "runs": self.runs}, separators=(",", ":"), allow_nan=False)
        return text.replace("<", "\\u003c")


__all__ = ["Provenance"]
