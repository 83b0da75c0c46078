"""The shape of the code (issue #13): the head's forward reads like the paper's Fig. 2, no library function is long,
and the DVC stages are independent modules.

A function's length counts its lines from its `def` to its last line (decorators excluded, docstring included).
"""

from __future__ import annotations

import ast
from pathlib import Path

from test_dvc_deps import imported_names, module_file

REPO = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80
MAX_HEAD_FORWARD_LINES = 60


def _functions(path: Path) -> list[tuple[str, int]]:
    """(qualified name, lines) of every function and method defined in `path`, nested ones included."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                found.append((name, child.end_lineno - child.lineno + 1))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(), filename=str(path)), "")
    return found


def test_function_length_counts_from_def_to_last_line(tmp_path):
    path = tmp_path / "probe.py"
    source = [
        "@decorator",
        "def f(x):",
        "    '''doc'''",
        "",
        "    return x",
        "",
        "",
        "class A:",
        "    def g(self):",
        "        pass",
    ]
    path.write_text("\n".join(source) + "\n")
    assert _functions(path) == [("f", 4), ("A.g", 2)]


def test_head_forward_is_short():
    lengths = dict(_functions(REPO / "cgstvg" / "model" / "head.py"))
    assert lengths["CGSTVGHead.forward"] < MAX_HEAD_FORWARD_LINES, lengths["CGSTVGHead.forward"]


def test_no_library_function_is_long():
    files = sorted((REPO / "cgstvg").rglob("*.py"))
    assert len(files) > 50
    long = [
        (f"{path.relative_to(REPO)}:{name}", lines)
        for path in files
        for name, lines in _functions(path)
        if lines > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_stage_module_imports_another_stage_module():
    stages = sorted(p for p in (REPO / "pipeline").glob("*.py") if p.name != "__init__.py")
    assert len(stages) >= 6
    imports = {}
    for path in stages:
        files = {module_file(name) for name in imported_names(path)}
        others = sorted(
            f.relative_to(REPO).as_posix()
            for f in files
            if f is not None and f.parent == REPO / "pipeline" and f.name != "__init__.py" and f != path
        )
        if others:
            imports[path.name] = others
    assert not imports, f"pipeline modules that import other pipeline modules: {imports}"
