"""UDA methods behind one interface (base.Method), one module per method, a registry by name.

Spec grammar for ``build_methods``: ``"a+b"`` trains a and b together in one fit; ``"a+b>c"``
additionally runs c as a post-hoc stage after the fit (``run_stages``), e.g. ``"fada>cra"`` (the
published FADA -> CRA chain) or ``"dacs>cr"``. Methods with ``post_hoc = True`` (``ia``, ``cr``) run
their stage after the fit even when given with '+'.

Composition rule: each method declares the exclusive roles it takes (``Method.exclusive``, see
``base.ROLES``) and the methods it conflicts with (``Method.conflicts``); within one fit a role can
be taken once ("generator_adversary": advent / fada / cra / depth; "mix": dacs / cpsl); "label_shift"
(ia / cr) can be taken once per whole spec, stages included. Everything else composes (ripu, minent,
t2s, bida, ...). Stages: ``sd`` (FADA/CRA self-distillation), ``kd`` (CPSL's distillation), ``sprior``
(the depth method's spatial-prior self-training), ``cra``, ``cr``, ``ia``.
"""
from __future__ import annotations

from core.methods.advent import AdvEnt
from core.methods.base import ROLES, Method, StageOnly, StagePlan  # noqa: F401
from core.methods.bida import BiDA
from core.methods.cpsl import CPSL
from core.methods.cra import CRA
from core.methods.dacs import DACS
from core.methods.depth import DepthDistribution, SpatialPriorStage
from core.methods.distill import CPSLDistillation, SelfDistillation
from core.methods.fada import FADA
from core.methods.hrda import HRDA
from core.methods.labelshift import ClassifierRectification, InferenceAdjustment
from core.methods.minent import MinEnt
from core.methods.ripu import RIPULosses
from core.methods.source_only import SourceOnly
from core.methods.t2s import T2S

REGISTRY: dict[str, type[Method]] = {
    "source_only": SourceOnly,
    "ripu": RIPULosses,
    "dacs": DACS,
    "advent": AdvEnt,
    "minent": MinEnt,
    "fada": FADA,
    "cra": CRA,
    "ia": InferenceAdjustment,
    "cr": ClassifierRectification,
    "hrda": HRDA,
    "cpsl": CPSL,
    "bida": BiDA,
    "t2s": T2S,
    "depth": DepthDistribution,
    "sd": SelfDistillation,
    "kd": CPSLDistillation,
    "sprior": SpatialPriorStage,
}

RUN_WIDE_ROLES = {"label_shift"}   # checked over the whole spec, post-hoc stages included


def _make(name: str, options: dict) -> Method:
    if name not in REGISTRY:
        raise ValueError(f"unknown method '{name}' (known: {', '.join(sorted(REGISTRY))})")
    try:
        return REGISTRY[name](**options.get(name, {}))
    except TypeError as e:
        raise ValueError(f"bad options for method '{name}': {e}") from None


def _check_roles(methods: list[Method], roles: set[str] | None = None) -> None:
    taken: dict[str, str] = {}
    for m in methods:
        for role in sorted(m.exclusive):
            if roles is not None and role not in roles:
                continue
            if role in taken:
                raise ValueError(f"methods '{taken[role]}' and '{m.name}' cannot be combined: both {ROLES[role]}")
            taken[role] = m.name


def check_compatible(methods: list[Method]) -> None:
    """Raise a one-line ValueError if the methods of one fit cannot run together."""
    names = [m.name for m in methods]
    for i, m in enumerate(methods):
        if m.name in names[:i]:
            raise ValueError(f"method '{m.name}' is given twice")
        for other in names[:i]:
            if other in m.conflicts or m.name in methods[names.index(other)].conflicts:
                raise ValueError(f"methods '{other}' and '{m.name}' cannot be combined (declared conflict)")
    _check_roles(methods)


def build_methods(spec: str, options: dict[str, dict] | None = None) -> list[Method]:
    """``'a+b>c'`` -> [a(), b(), StageOnly(c())]; ``'source_only'`` -> []. The methods of the fit are
    sorted by ``Method.order`` (stable), the hook order of the loop; stages keep the spec's order.

    ``options``: constructor kwargs per method name, e.g. ``{"minent": {"lambda_ent": 0.1}}``.
    Raises a one-line ValueError for unknown names, bad options or incompatible compositions."""
    options = options or {}
    parts = [p.strip() for p in spec.split(">")]
    if any(not p for p in parts[1:]):
        raise ValueError(f"empty stage in method spec '{spec}'")
    online = [_make(n.strip(), options) for n in parts[0].split("+") if n.strip()]
    online = sorted((m for m in online if m.name != "source_only"), key=lambda m: m.order)
    check_compatible(online)
    stages: list[Method] = []
    for part in parts[1:]:
        for n in part.split("+"):
            if n.strip() and n.strip() != "source_only":
                stages.append(StageOnly(_make(n.strip(), options)))
    _check_roles(online + [s.inner for s in stages], RUN_WIDE_ROLES)
    return online + stages


def _overrides(m: Method, attr: str) -> bool:
    m = m.inner if isinstance(m, StageOnly) else m
    return getattr(type(m), attr) is not getattr(Method, attr)


def adjusts_logits(m: Method) -> bool:
    """Whether method ``m`` (or the stage it wraps) changes logits at inference (``adjust_logits``: IA)."""
    return _overrides(m, "adjust_logits")


def compose_adjust(methods):
    """The methods' ``adjust_logits`` applied in order (for ``evaluate(adjust=...)``), or None."""
    fns = [m.adjust_logits for m in methods if adjusts_logits(m)]
    if not fns:
        return None

    def adjust(logits):
        for f in fns:
            logits = f(logits)
        return logits
    return adjust
