"""Synthetic results stores for the report tests, written through the real store API (claim, then finish).

Each grid is built to need one plot: ``curve`` (robust accuracy against eps per defense, three seeds),
``matrix`` (transfer: source x target), ``attack_defense`` (two backdoors x three clean-ups), ``roc`` (sample
detectors with a roc.json each), ``bars`` (one attack, two defenses); :func:`big_store` is a 1,000-cell grid.
Values are fixed functions of the axes plus a seeded offset, so tests can recompute them.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mmsec.runs.store import ResultsStore

DEFINITIONS = {
    "robust_accuracy": ("zero-shot top-1 accuracy under the attack", "pgd L-inf on clean test images"),
    "clean_accuracy": ("zero-shot top-1 accuracy on unperturbed images", "clean test images"),
    "asr": ("retrieval ASR at R@1 of the pairs crafted on the source", "pairs crafted on the source"),
    "backdoor_asr": ("fraction of triggered non-target images classified as the target", "triggered test images"),
    "detector_auroc": ("AUROC of the detector's scores against the poison record", "poisoned training pairs"),
    "train_seconds": ("wall-clock training time", "cost"),
}
SEED_OFFSETS = (0.0, 0.02, -0.01)  # seed s adds SEED_OFFSETS[s] to a value


def robust(eps: float, defense: str) -> float:
    """The curve grid's robust accuracy at ``eps`` (before the seed's offset): falls with eps, less when hardened."""
    return round(0.95 * math.exp(-eps * 255 / (8.0 if defense == "tecoa" else 2.5)), 6)


class Writer:
    """Adds finished runs to a store (one transaction each, fsync off: a throw-away test store)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.store = ResultsStore(folder)
        self.store.conn.execute("PRAGMA synchronous = OFF")

    def add(self, spec: str, seed: int, metrics: dict[str, float], model: str = "zoo:shapes-clip-resnet",
            attack: str = "pgd", params: dict | None = None, artifacts: dict[str, bytes] | None = None,
            **cell_fields) -> int:
        cell = {"spec_name": spec, "model": model, "seed": seed, "task": cell_fields.pop("task", "zeroshot"),
                "attack": {"name": attack, "params": params or {}}, **cell_fields}
        cell_hash = hashlib.sha256(json.dumps(cell, sort_keys=True).encode()).hexdigest()
        run_id = self.store.claim(cell_hash, cell, f"spec-hash-of-{spec}")
        staged = []
        for filename, data in (artifacts or {}).items():
            tmp = Path(tempfile.mkdtemp(dir=self.folder)) / filename
            tmp.write_bytes(data)
            kind = filename.replace(".", "_")
            staged.append({"kind": kind, "filename": filename, "tmp_path": str(tmp),
                           "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})
        self.store.finish(run_id, {
            "metrics": [{"name": name, "value": value, "metric_version": 2,
                         "threat_model": DEFINITIONS.get(name, (name, f"threat of {name}"))[1],
                         "definition": DEFINITIONS.get(name, (f"definition of {name}", ""))[0],
                         "higher_is_better": name != "train_seconds"} for name, value in metrics.items()],
            "artifacts": staged, "wall_time_s": 1.5 + seed})
        return run_id

    def close(self) -> None:
        self.store.close()


def png(colour: tuple[int, int, int], size: int = 24) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def roc_json(auroc_target: float) -> bytes:
    fpr = [0.0, 0.05, 0.2, 1.0]
    tpr = [0.0, auroc_target - 0.1, auroc_target, 1.0]
    return json.dumps({"curves": [{"metric": "detector_auroc", "label": "kdist", "fpr": fpr, "tpr": tpr,
                                   "auroc": auroc_target, "n_positive": 30, "n_negative": 990}]}).encode()


def mixed_store(folder: Path) -> Path:
    """One store with the five grids (specs curve, matrix, attack_defense, roc, bars)."""
    w = Writer(folder)
    for defense in ("none", "tecoa"):
        for eps in (1 / 255, 2 / 255, 4 / 255, 8 / 255):
            for seed in range(3):
                extra = {"defense": {"name": "tecoa", "params": {}}} if defense == "tecoa" else {}
                w.add("curve", seed, {"clean_accuracy": 0.97 - 0.05 * (defense == "tecoa"),
                                      "robust_accuracy": robust(eps, defense) + SEED_OFFSETS[seed],
                                      "train_seconds": 3.0},
                      params={"eps": eps, "alpha": eps / 4, "steps": 10}, **extra,
                      artifacts={"examples.png": png((40 * seed, 120, int(eps * 255 * 20)))} if seed < 2 else None)
    for source in ("zoo:shapes-clip-resnet", "zoo:shapes-clip-vit"):
        for target in ("zoo:shapes-clip-resnet", "zoo:shapes-clip-vit"):
            w.add("matrix", 0, {"asr": 0.9 if source == target else 0.3}, model=source, attack="sga",
                  params={"eps": 2 / 255}, task="transfer", target=target)
    for attack in ("pbcl_backdoor", "badclip"):
        for defense in ("none", "cleanclip", "roclip"):
            extra = {"defense": {"name": defense, "params": {}}} if defense != "none" else {}
            w.add("attack_defense", 0, {"backdoor_asr": 0.95 if defense == "none" else 0.2, "clean_accuracy": 0.9},
                  attack=attack, params={"target": "red circle"}, task="backdoor", **extra)
    for defense, auroc in (("kdist", 0.93), ("slof", 0.81)):
        w.add("roc", 0, {"detector_auroc": auroc, "backdoor_asr": 0.97}, attack="pbcl_backdoor",
              params={"rate": 0.01}, task="backdoor", defense={"name": defense, "params": {}},
              artifacts={"roc.json": roc_json(auroc)})
    for defense in ("none", "fare"):
        extra = {"defense": {"name": defense, "params": {}}} if defense != "none" else {}
        w.add("bars", 0, {"clean_accuracy": 0.96, "robust_accuracy": 0.1 if defense == "none" else 0.5},
              params={"eps": 4 / 255}, **extra)
    w.close()
    return Path(folder)


def big_store(folder: Path) -> Path:
    """1,000 cells of one spec: 4 models x 5 defenses x 10 eps x 5 step counts, one seed, 5 metrics each."""
    w = Writer(folder)
    for m in range(4):
        for d in range(5):
            for e in range(1, 11):
                for steps in (5, 10, 20, 40, 80):
                    extra = {"defense": {"name": f"defense{d}", "params": {}}} if d else {}
                    w.add("big", 0, {"clean_accuracy": 0.9 - 0.01 * d, "robust_accuracy": robust(e / 255, "none"),
                                     "noise_accuracy": 0.88, "asr": 0.1 * (e % 7), "train_seconds": 2.0},
                          model=f"zoo:model-{m}", params={"eps": e / 255, "steps": steps}, **extra)
    w.close()
    return Path(folder)


@dataclass
class FakeClaimResult:
    """The fields of mmsec.claims.ClaimResult the report reads (the claims section takes any such object)."""

    name: str
    version: int
    paper: str
    statement: str
    recipe: str
    preset: str | None
    bar: float
    direction: str
    unit: str
    values: dict
    interval: object
    verdict: str
    spec_name: str
    missing: str = ""


def fake_claims() -> list[FakeClaimResult]:
    """Three claims: reproduced over 3 seeds (its spec is the store's ``curve``), inconclusive on 1 seed, not run."""
    from mmsec.metrics.intervals import t_interval

    return [
        FakeClaimResult("demo.pgd_beats_noise", 2, "Madry et al., ICLR 2018", "PGD cuts accuracy by 50 points",
                        "quickstart.yaml", "dev", 0.5, ">=", "points", {0: 0.61, 1: 0.64, 2: 0.60},
                        t_interval([0.61, 0.64, 0.60]), "reproduced", "curve"),
        FakeClaimResult("demo.one_seed", 1, "Zhang et al., ACM MM 2022", "a margin of 5 points", "co_attack.yaml",
                        "dev", 0.05, ">=", "points", {0: 0.07}, t_interval([0.07]), "inconclusive", "co_attack-dev"),
        FakeClaimResult("demo.missing", 1, "Carlini & Terzis, ICLR 2022", "ASR <= 0.1 after the defense",
                        "backdoor.yaml", "dev", 0.1, "<=", "", {}, None, "not run", "backdoor-dev",
                        "3 of 3 seeds incomplete (seed 0: no finished cell with backdoor_asr)"),
    ]
