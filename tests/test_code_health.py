"""Architecture rules that a reader should not have to check by hand: no import cycles (module-level
or hidden inside functions), frozen layers stay frozen through evaluation and post-hoc stages."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "core", "storage", "annotator")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its body (function-level imports too).
    ``from pkg import name`` points at ``pkg.name`` when that is a module, else at ``pkg``."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:   # relative import
                    anchor = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:     # `import a.b.c` of a module: its deepest project module
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycle_in_the_project():
    graph = import_graph()
    assert len(graph) > 40 and "core.train" in graph["app.session"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _bn(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_frozen_batchnorm_stays_frozen_through_evaluate_and_a_post_hoc_stage():
    from core.evaluate import evaluate
    from core.methods.labelshift import ClassifierRectification
    from core.models import Segmentor
    from core.train import TrainConfig, run_stages
    from tests.test_methods import SIZE, data

    torch.manual_seed(0)
    model = Segmentor(19, output_stride=16, weights=None)
    src, tgt = data()
    frozen = _bn(model.backbone)
    running = [m.running_mean.clone() for m in frozen]
    model.train()
    assert not any(m.training for m in frozen) and all(m.training for m in _bn(model.head))
    evaluate(model, tgt, None)
    assert model.training and not any(m.training for m in frozen)            # evaluate() leaves it frozen
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    head_stats = [m.running_mean.clone() for m in _bn(model.head)]
    run_stages([ClassifierRectification(iterations=2)], model, src, tgt, TrainConfig(iterations=2, crop_size=SIZE))
    assert all(torch.equal(a, m.running_mean) for a, m in zip(running, frozen))   # backbone BN untouched
    assert all(torch.equal(a, m.running_mean) for a, m in zip(head_stats, _bn(model.head)))   # stage: all BN
    assert model.frozen == "backbone" and not any(m.training for m in frozen)     # the scope is back
    assert all(m.training for m in _bn(model.head)) and all(p.requires_grad for p in model.head.parameters())
    with pytest.raises(ValueError, match="freeze scope"):
        model.freeze("encoder")


def test_no_sql_outside_storage():
    import re

    sql = re.compile(r"""["'](SELECT \S|INSERT (OR \w+ )?INTO|UPDATE \w+ SET|DELETE FROM|CREATE TABLE|ALTER TABLE)""")
    offenders = []
    for pkg in ("app", "core", "annotator", "bench"):
        for p in (ROOT / pkg).rglob("*.py"):
            for i, line in enumerate(p.read_text().splitlines(), 1):
                if sql.search(line) or re.search(r"\b(db|conn|con)\.(execute|query)\(", line):
                    offenders.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
    assert sql.search('x = "SELECT id FROM t"')     # the pattern does match SQL
