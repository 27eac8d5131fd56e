"""The annotator's frontend files (annotator/static/*.js) are JavaScript that parses (ES2017, with
esprima from PyPI) and passes two lint rules: every identifier read is declared somewhere in the
canvas script or is a browser global (no-undef), and every declared name is used (no-unused-vars).
Each canvas is checked as the browser receives it: the shared prelude + the canvas's own file."""
from __future__ import annotations

from pathlib import Path

import esprima
import pytest

STATIC = Path(__file__).resolve().parents[1] / "annotator" / "static"
BROWSER_GLOBALS = {
    "window", "document", "console", "Math", "JSON", "Date", "Number", "String", "Array", "Object", "Set", "Map",
    "Promise", "Uint8Array", "Uint8ClampedArray", "Uint16Array", "Int16Array", "Uint32Array", "Float64Array", "Int32Array", "Float32Array", "ImageData", "Image", "atob", "btoa",
    "setTimeout", "clearTimeout", "setInterval", "clearInterval", "requestAnimationFrame", "performance",
    "navigator", "location", "fetch", "Error", "isNaN", "parseInt", "parseFloat", "Infinity", "NaN", "undefined",
    "Boolean", "RegExp", "KeyboardEvent", "MouseEvent", "Event", "HTMLElement", "ResizeObserver",
    "MutationObserver", "IntersectionObserver", "getComputedStyle", "localStorage", "sessionStorage", "URL", "Blob", "TextDecoder",
    "TextEncoder", "structuredClone", "alert", "confirm", "arguments",
    # provided by Gradio to js_on_load (see ../shared/reference/annotator.md)
    "element", "trigger", "props", "server",
}


def _children(node):
    for key, value in vars(node).items():
        if key in ("type", "range", "loc"):
            continue
        items = value if isinstance(value, list) else [value]
        for v in items:
            if hasattr(v, "type"):
                yield key, v


def lint(source: str) -> list[str]:
    """Problems of a script: undeclared identifiers read, declared names never used."""
    tree = esprima.parseScript(source, {"tolerant": False})
    declared: dict[str, int] = {}
    used: set[str] = set()

    def declare(pattern):
        if pattern is None:
            return
        if pattern.type == "Identifier":
            declared.setdefault(pattern.name, 0)
        elif pattern.type == "ObjectPattern":
            for prop in pattern.properties:
                declare(prop.value if prop.type == "Property" else prop.argument)
        elif pattern.type == "ArrayPattern":
            for el in pattern.elements:
                declare(el)
        elif pattern.type == "AssignmentPattern":
            declare(pattern.left)
        elif pattern.type == "RestElement":
            declare(pattern.argument)

    def visit(node, parent=None, key=None):
        t = node.type
        if t == "VariableDeclarator":
            declare(node.id)
        elif t in ("FunctionDeclaration", "FunctionExpression", "ArrowFunctionExpression"):
            if getattr(node, "id", None) is not None:
                declare(node.id)
            for p in node.params:
                declare(p)
        elif t == "CatchClause":
            declare(node.param)
        elif t == "Identifier":
            is_prop = parent is not None and ((parent.type == "MemberExpression" and key == "property"
                                               and not parent.computed)
                                              or (parent.type == "Property" and key == "key" and not parent.computed))
            is_decl = parent is not None and (
                (parent.type == "VariableDeclarator" and key == "id")
                or (parent.type in ("FunctionDeclaration", "FunctionExpression") and key in ("id", "params"))
                or (parent.type == "ArrowFunctionExpression" and key == "params")
                or (parent.type == "CatchClause" and key == "param"))
            if not is_prop and not is_decl:
                used.add(node.name)
        for k, child in _children(node):
            visit(child, node, k)

    visit(tree)
    problems = [f"'{n}' is not defined" for n in sorted(used - set(declared) - BROWSER_GLOBALS)]
    problems += [f"'{n}' is declared but never used" for n in sorted(set(declared) - used)
                 if not n.startswith("_")]
    return problems


def canvas_script(name: str) -> str:
    return ((STATIC / "prelude.js").read_text() + "\n" + (STATIC / f"{name}.js").read_text()).replace(
        "__CONFIG__", "{}")


@pytest.mark.parametrize("name", ["region", "pixel"])
def test_canvas_scripts_parse_and_pass_lint(name):
    assert lint(canvas_script(name)) == []


def test_the_linter_finds_what_it_should():
    assert lint("const a = 1; b(a);") == ["'b' is not defined"]
    assert lint("const a = 1; const c = 2; console.log(a);") == ["'c' is declared but never used"]
    assert lint("(function () { const o = {x: 1}; return o.x; })();") == []
    with pytest.raises(esprima.Error):
        lint("const = ;")


def test_the_python_side_serves_these_files():
    from annotator.canvas_pixel import PIXEL_CSS, PIXEL_HTML, PIXEL_JS
    from annotator.canvas_region import REGION_CSS, REGION_HTML, REGION_JS

    assert REGION_JS.endswith((STATIC / "region.js").read_text()) and PIXEL_JS.endswith((STATIC / "pixel.js").read_text())
    common = (STATIC / "common.css").read_text()
    assert REGION_HTML == (STATIC / "region.html").read_text() and PIXEL_CSS == common + (STATIC / "pixel.css").read_text()
    assert "ra-root" in REGION_HTML and "ra-root" in REGION_CSS and "pa-root" in PIXEL_HTML
