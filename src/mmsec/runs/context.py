"""A cell's context: its model and data loading, a bounded cache of trained models, persisted ones, artifacts.

Cells of one grid share expensive things: the published model, the evaluation data, and models
trained inside a cell (a backdoored model shared by the cells of every defense, a hardened model
shared by the cells of every attack budget, a merged model). The :class:`ModelCache` keeps them in
memory up to a byte budget (least recently used first out; ``MMSEC_CACHE_MB``, default 4096), and
:meth:`CellContext.trained` can also *persist* a trained model into the results folder
(``<results>/models/<key hash>.safetensors`` + a JSON card with its sha256), so a resumed or
repeated run, another process or a Ray worker on the same folder loads it instead of training it
again. Persisted weights are a state dict for the published model's architecture (safetensors
only, checked against the card's sha256); what else a cell needs (a trigger's record, the seconds
training took) travels in the card as JSON.

The cache key is the canonical JSON of everything that determines the object (model name,
method configs, data, seed): two cells that agree on it share the object. A key that names one of the
cell's models is tied to that model's weights (their content hash is added to it), so re-saved weights
under the same name never hand back an object built from the old ones.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import socket
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..models.checkpoint import sha256_file

logger = logging.getLogger(__name__)

CACHE_ENV = "MMSEC_CACHE_MB"
MODELS_DIR = "models"


def key_hash(key: Any) -> str:
    """sha256 of a key's canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def nbytes(obj: Any, _seen: set[int] | None = None) -> int:
    """Bytes held by the tensors reachable from ``obj`` (modules, tensors, dataclasses, containers)."""
    seen = _seen if _seen is not None else set()
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, torch.nn.Module):
        return sum(t.numel() * t.element_size() for t in list(obj.parameters()) + list(obj.buffers()))
    if isinstance(obj, dict):
        return sum(nbytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v, seen) for v in obj)
    if hasattr(obj, "__dict__"):
        return sum(nbytes(v, seen) for v in vars(obj).values())
    return 0


class ModelCache:
    """An LRU map from key hashes to objects, bounded by the bytes of the tensors they hold."""

    def __init__(self, max_bytes: int | None = None):
        if max_bytes is None:
            max_bytes = int(float(os.environ.get(CACHE_ENV, "4096")) * 2**20)
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> Any:
        value, size = self._items.pop(key)
        self._items[key] = (value, size)  # most recently used last
        self.hits += 1
        return value

    def put(self, key: str, value: Any) -> None:
        size = nbytes(value)
        self._items.pop(key, None)
        self._items[key] = (value, size)
        while len(self._items) > 1 and self.bytes > self.max_bytes:
            evicted, _ = self._items.popitem(last=False)
            logger.debug("model cache: evicted %s", evicted[:12])

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self._items.values())

    def clear(self) -> None:
        self._items.clear()


# One per process: cells run one after another in a process (or a Ray worker) share it.
PROCESS_CACHE = ModelCache()


EXTRA = "__extra__/"  # prefix of the tensors stored beside a persisted model's weights


@dataclass
class Trained:
    """A model trained inside a cell, JSON-safe facts about it (seconds, a trigger's record, ...) and
    tensors computed with it that later cells need (e.g. the embeddings of its training set)."""

    model: Any
    info: dict
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


class CellContext:
    """What a task's ``run(cell, ctx)`` uses to load, cache and stage.

    Args:
        results_dir: the results folder (persisted models go to ``<results_dir>/models``); None: no
            persistence (in-memory caching only).
        staging_dir: where artifact files are staged before the runner moves them into place.
        cache: the in-memory cache (default: the process's).
    """

    def __init__(self, results_dir: str | Path | None = None, staging_dir: str | Path | None = None,
                 cache: ModelCache | None = None, weights: dict[str, str] | None = None):
        self.results_dir = Path(results_dir) if results_dir is not None else None
        self.staging_dir = Path(staging_dir) if staging_dir is not None else None
        self.cache = cache if cache is not None else PROCESS_CACHE
        self.weights = dict(weights or {})  # model name -> content hash of its files (the cell's inputs)

    def _tied(self, key: Any) -> Any:
        """``key`` with the content hash of every cell model it names (see the module docstring)."""
        if not isinstance(key, dict) or not self.weights:
            return key
        named = {v: self.weights[v] for v in key.values() if isinstance(v, str) and v in self.weights}
        return {**key, "_weights": named} if named else key

    # -- generic memoisation -------------------------------------------------------------------
    def cached(self, key: Any, build: Callable[[], Any]) -> Any:
        """``build()`` once per key in this process (bounded in memory)."""
        key = self._tied(key)
        h = key_hash(key)
        if h in self.cache:
            return self.cache.get(h)
        self.cache.misses += 1
        value = build()
        self.cache.put(h, value)
        return value

    # -- published models and data ---------------------------------------------------------------
    def load_model(self, spec: str, family: str | None = None) -> Any:
        """The model named ``spec`` (``zoo:NAME``, ``hf:DIR``, ...) in eval mode, loaded once per process."""

        from ..models.loaders import fingerprint, load_model

        def load() -> Any:
            model = load_model(spec, family=family) if family else load_model(spec)
            return model.eval() if hasattr(model, "eval") else model

        return self.cached({"published_model": spec, "family": family, "weights": fingerprint(spec)}, load)

    def load_data(self, data: dict, image_size: int) -> Any:
        """The data set a spec's ``data`` block names, rendered at ``image_size`` unless it sets one."""
        resolved = dict(data, image_size=data.get("image_size") or image_size)

        def load() -> Any:
            from ..data import load_dataset

            if resolved["name"] == "shapes":
                return load_dataset("shapes", quiet=True, split=resolved["split"], n=resolved["n"],
                                    image_size=resolved["image_size"], seed=resolved["seed"],
                                    start=resolved.get("start") or 0)
            return load_dataset(resolved["name"], quiet=True, path=resolved["path"],
                                image_size=resolved["image_size"])

        return self.cached({"data": resolved}, load)

    # -- models trained inside cells ---------------------------------------------------------------
    def trained(self, key: dict, build: Callable[[], Trained], base: str | None = None) -> Trained:
        """A model trained inside a cell, built once and shared.

        Looked up in memory, then (when ``base`` names the published model it was trained from and the
        context has a results folder) on disk; else built, kept in memory and, when it has ``base``'s
        architecture, persisted. ``build`` returns a :class:`Trained` (its ``info`` must be JSON-safe).
        """
        h = key_hash(key)
        if h in self.cache:
            return self.cache.get(h)
        self.cache.misses += 1
        found = self._load_persisted(h, key, base) if base is not None else None
        if found is None:
            found = build()
            if base is not None:
                self._persist(h, key, base, found)
        self.cache.put(h, found)
        return found

    def _paths(self, h: str) -> tuple[Path, Path] | None:
        if self.results_dir is None:
            return None
        folder = self.results_dir / MODELS_DIR
        return folder / f"{h[:24]}.safetensors", folder / f"{h[:24]}.json"

    def _persist(self, h: str, key: dict, base: str, trained: Trained) -> None:
        paths = self._paths(h)
        model = trained.model
        if paths is None or not isinstance(model, torch.nn.Module):
            return
        published = self.load_model(base)
        if type(model) is not type(published) or set(model.state_dict()) != set(published.state_dict()):
            logger.debug("not persisting %s: not the architecture of %s", type(model).__name__, base)
            return  # a wrapper (a prompt-tuned model): kept in memory only
        from safetensors.torch import save_file

        weights, card = paths
        weights.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        state.update({EXTRA + k: v.detach().contiguous().cpu().clone() for k, v in trained.tensors.items()})
        tmp = Path(tempfile.mkstemp(dir=weights.parent, prefix=f".{socket.gethostname()}-{os.getpid()}-",
                                    suffix=".safetensors")[1])
        save_file(state, str(tmp), metadata={"mmsec": json.dumps({"key": key, "base": base}, sort_keys=True)})
        record = {"key": key, "key_hash": h, "base": base, "info": trained.info, "sha256": sha256_file(tmp),
                  "class": type(model).__name__, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.replace(tmp, weights)  # the weights first: a card always describes complete weights
        tmp_card = card.with_suffix(f".json.{os.getpid()}.tmp")
        tmp_card.write_text(json.dumps(record, sort_keys=True, indent=1) + "\n")
        os.replace(tmp_card, card)

    def _load_persisted(self, h: str, key: dict, base: str) -> Trained | None:
        paths = self._paths(h)
        if paths is None or not paths[1].is_file() or not paths[0].is_file():
            return None
        from ..models.checkpoint import load_checkpoint

        weights, card = paths
        try:
            record = json.loads(card.read_text())
            if record.get("key") != json.loads(json.dumps(key)):
                return None  # (a 24-hex-digit prefix collision: train anew)
            tensors, _ = load_checkpoint(weights, expected_sha256=record["sha256"])
            extra = {k[len(EXTRA):]: tensors.pop(k) for k in [k for k in tensors if k.startswith(EXTRA)]}
            model = copy.deepcopy(self.load_model(base))
            model.load_state_dict(tensors, strict=True)
        except Exception as e:  # noqa: BLE001 - a damaged persisted model is retrained, never trusted
            logger.warning("persisted model %s is unusable (%s); training it again", weights, e)
            return None
        logger.info("reusing the persisted model %s", weights.name)
        return Trained(model.eval(), record.get("info") or {}, extra)

    # -- artifacts -----------------------------------------------------------------------------------
    def staging_folder(self) -> Path | None:
        """A fresh folder for this cell's artifacts (None when the run keeps no artifacts)."""
        if self.staging_dir is None:
            return None
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        # The prefix names the writer, so stale folders of killed processes can be recognised.
        return Path(tempfile.mkdtemp(dir=self.staging_dir, prefix=f"{socket.gethostname()}-{os.getpid()}-"))


def artifact_entry(kind: str, path: Path) -> dict:
    """The artifact record the runner stores: kind, file name, staged path, sha256, size."""
    return {"kind": kind, "filename": path.name, "tmp_path": str(path), "sha256": sha256_file(path),
            "bytes": path.stat().st_size}


__all__ = ["CACHE_ENV", "CellContext", "ModelCache", "PROCESS_CACHE", "Trained", "artifact_entry", "key_hash",
           "nbytes"]
