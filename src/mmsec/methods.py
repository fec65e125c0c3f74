"""The contract every registered method shares: parameters recorded from ``__init__``, a config round trip.

A method (an attack, a defense, a detector, a merging method, a trigger) is a class configured in
``__init__`` with typed keyword arguments whose defaults are the paper's, and called on data. Its
base class here records those arguments (as diffusers' ``register_to_config`` does) without any
magic: :meth:`Method.config` reads back, for each ``__init__`` parameter, the attribute of the same
name. ``build(kind, config)`` makes the method again from that config through the registry, so a
stored result can be reproduced from its row::

    attack = PGD(eps=4/255, steps=10)
    again = build("attacks", attack.config())       # {"name": "pgd", "params": {...}}
    assert again.config() == attack.config()

Object-valued parameters (a trigger, a universal perturbation) are *components*: a method lists
them in ``components = {"trigger": "triggers"}`` (parameter -> registry kind), and in a config or a
spec they are written as a nested ``{name, params}`` (or just the name), built through the registry
of that kind. Each base class says which model family its methods need (``family``); a method
overrides it where it needs more (a fusion model) or none (a data poisoner).

A leaf above :mod:`mmsec.registry`: it imports nothing else from mmsec.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

from . import registry


class Method:
    """Base of every registered method. Subclasses store each ``__init__`` argument as an attribute
    of the same name (validated), so :meth:`params` and :meth:`config` can read them back."""

    family: ClassVar[str | None] = None  # the model family it needs ("contrastive", "fusion", ...); None: none
    paper: ClassVar[str | None] = None  # "Authors, Venue Year" of the paper it implements
    components: ClassVar[dict[str, str]] = {}  # __init__ arguments that are registered objects: name -> kind

    def params(self) -> dict[str, Any]:
        """The ``__init__`` arguments as configured (recorded with every result)."""
        return {k: getattr(self, k) for k in init_parameters(type(self)) if hasattr(self, k)}

    def config(self) -> dict[str, Any]:
        """``{"name": <registered name>, "params": {...}}``, JSON-safe; components nested the same way.

        Raises TypeError when the method is not registered or a parameter cannot be written as JSON
        (a tensor argument, say): such a method cannot be rebuilt from a spec.
        """
        entry = registry.entry_of(self)
        if entry is None:
            raise TypeError(f"{type(self).__name__} is not registered, so it has no config name")
        out: dict[str, Any] = {}
        for key in init_parameters(type(self)):
            if not hasattr(self, key):
                raise TypeError(f"{type(self).__name__} does not keep its __init__ argument {key!r} as an attribute "
                                "of that name, so its config cannot be read back")
            value = getattr(self, key)
            if isinstance(value, Method):
                out[key] = value.config()
            else:
                out[key] = _json_value(value, f"{entry.name}.{key}")
        return {"name": entry.name, "params": out}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params().items())})"


def init_parameters(cls: type) -> list[str]:
    """The keyword parameters of ``cls.__init__`` (without self and ``*args`` / ``**kwargs``)."""
    sig = inspect.signature(cls.__init__)
    return [p.name for p in sig.parameters.values()
            if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def accepted_parameters(factory: Any) -> tuple[set[str], bool]:
    """The keyword names ``factory`` accepts and whether it also takes ``**kwargs``."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in sig.parameters.values()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
    return names, any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def _json_value(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{where} is {value}; a config holds finite numbers only")
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v, where) for k, v in value.items()}
    raise TypeError(f"{where} is a {type(value).__name__}, which a config cannot hold")


def build(kind: str, config: dict[str, Any] | str, where: str = "") -> Any:
    """The method ``config`` names (``{"name", "params"}`` or a bare name) of registry ``kind``.

    Components among the params (see :class:`Method`) are built first, recursively.
    """
    if isinstance(config, str):
        config = {"name": config, "params": {}}
    if not isinstance(config, dict) or "name" not in config or set(config) - {"name", "params"}:
        raise ValueError(f"{where or kind}: expected a name or a mapping {{name, params}}, got {config!r}")
    entry = registry.get(kind, config["name"])
    params = dict(config.get("params") or {})
    components = getattr(entry.factory, "components", {}) or {}
    for key, sub_kind in components.items():
        value = params.get(key)
        if isinstance(value, dict) or (isinstance(value, str) and _is_registered(sub_kind, value)):
            params[key] = build(sub_kind, value, f"{where or config['name']}.{key}")
    return entry.factory(**params)


def _is_registered(kind: str, name: str) -> bool:
    return registry.find(name, (kind,)) is not None


__all__ = ["Method", "accepted_parameters", "build", "init_parameters"]
