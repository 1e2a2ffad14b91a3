"""Expert families and their registry.

``list_experts()`` gives the registered names; :func:`make_expert` builds one from
a name, a config dict (``{"name": "ar", "order": 0}``) or passes an instance
through. One module per family; each new family registers itself here and the
contract test (``tests/models/experts/test_contract.py``) checks it on arrival.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

from bayes_moe.models.experts.ar import AR
from bayes_moe.models.experts.base import CAPACITY_CLASSES, HORIZON_GROUPS, Expert, PanelExpert
from bayes_moe.models.experts.cross_sectional import CrossSectional
from bayes_moe.models.experts.garch import GARCH
from bayes_moe.models.experts.kalman import Kalman
from bayes_moe.models.experts.long_range import LONG_RANGE_EXPERTS
from bayes_moe.models.experts.macro import Macro
from bayes_moe.models.experts.neural import NEURAL_EXPERTS
from bayes_moe.models.experts.noise import NoiseModel
from bayes_moe.models.experts.var import VAR
from bayes_moe.models.experts.volatility import Volatility
from bayes_moe.models.experts.window import WindowExpert

_REGISTRY: dict[str, type[Expert]] = {}


def register_expert(cls: type[Expert]) -> type[Expert]:
    """Add an expert class to the registry under ``cls.name`` (usable as a decorator)."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"an expert named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


for _cls in cast(
    "tuple[type[Expert], ...]",
    (
        AR,
        VAR,
        Kalman,
        GARCH,
        Volatility,
        Macro,
        CrossSectional,
        *NEURAL_EXPERTS,
        *LONG_RANGE_EXPERTS,
    ),
):
    register_expert(_cls)


def list_experts() -> list[str]:
    """Names of the registered expert families."""
    return sorted(_REGISTRY)


def expert_class(name: str) -> type[Expert]:
    """The class registered under ``name`` (ValueError listing the known names)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown expert {name!r}; registered experts: {list_experts()}") from None


def make_expert(spec: str | Mapping | Expert) -> Expert:
    """Build an expert from a name, a config mapping with a ``"name"`` key, or an instance."""
    if isinstance(spec, Expert):
        return spec
    if isinstance(spec, str):
        return expert_class(spec)()
    if isinstance(spec, Mapping):
        options = dict(spec)
        if "name" not in options:
            raise ValueError(f"expert config {options} has no 'name' key")
        return expert_class(options.pop("name"))(**options)
    raise TypeError(f"cannot make an expert from {spec!r}")


def expert_list(experts: str | Sequence[str | Mapping | Expert]) -> list[Expert]:
    """Build the experts of a mixture.

    ``experts`` is ``"all"`` (every registered family, in :func:`list_experts`
    order), a comma-separated string of names (``"ar,tcn,gru"``), or a sequence of
    names, config mappings and instances. ValueError for an empty choice or an
    unknown name (before anything is built).
    """
    if isinstance(experts, str):
        if experts.strip() == "all":
            names: list = list_experts()
        else:
            names = [name.strip() for name in experts.split(",") if name.strip()]
        specs: list = names
    else:
        specs = list(experts)
    if not specs:
        raise ValueError("a mixture needs at least one expert")
    for spec in specs:
        if isinstance(spec, str):
            expert_class(spec)
    return [make_expert(spec) for spec in specs]


def expert_spec(expert: Expert) -> dict:
    """The config mapping that :func:`make_expert` turns back into ``expert``."""
    return {"name": expert.name, **expert.config()}


__all__ = [
    "AR",
    "CAPACITY_CLASSES",
    "CrossSectional",
    "Expert",
    "GARCH",
    "HORIZON_GROUPS",
    "Kalman",
    "Macro",
    "NoiseModel",
    "PanelExpert",
    "VAR",
    "Volatility",
    "WindowExpert",
    "expert_class",
    "expert_list",
    "expert_spec",
    "list_experts",
    "make_expert",
    "register_expert",
]
