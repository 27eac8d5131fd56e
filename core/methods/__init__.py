"""UDA methods behind one interface (base.Method), one module per method, a registry by name."""
from core.methods.base import Method  # noqa: F401
from core.methods.ripu import RIPULosses

REGISTRY = {"source_only": Method, "ripu": RIPULosses}


def build_methods(spec: str) -> list[Method]:
    """'a+b' -> [a(), b()]; 'source_only' -> []."""
    names = [n for n in spec.split("+") if n]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown method '{unknown[0]}' (known: {', '.join(sorted(REGISTRY))})")
    return [REGISTRY[n]() for n in names if n != "source_only"]
