"""dvc.yaml cannot drift from the code: every repository file a stage's module imports is one of the stage's deps.

For each stage, the `python -m pipeline.<name>` of its `cmd` is followed through its imports (with `ast`, nothing is
executed) to every file of `cgstvg/` and `pipeline/` it loads: `import a.b`, `from a.b import c` (c may be a
submodule), relative imports, and the `__init__.py` of every package on the way, as Python runs them. Imports under
`if TYPE_CHECKING:` are left out (they never run). A dep that is a directory covers every file under it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cgstvg", "pipeline")
STAGE_MODULE = re.compile(r"python\s+-m\s+(pipeline\.\w+)")


def module_file(name: str, root: Path = REPO) -> Path | None:
    """The file that `import name` loads, if it lies in one of the repository's packages; else None."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    """Dotted name of a repository file, and whether it is a package (`__init__.py`)."""
    rel = path.relative_to(root).with_suffix("")
    is_package = rel.name == "__init__"
    parts = rel.parts[:-1] if is_package else rel.parts
    return ".".join(parts), is_package


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(path: Path, root: Path = REPO) -> set[str]:
    """Every dotted module name `path` may import (absolute; `from a import b` gives both `a` and `a.b`)."""
    module, is_package = _module_name(path, root)
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return {name for name in names if name}


def import_closure(module: str, root: Path = REPO) -> set[str]:
    """Repository-relative paths (posix) of every file that importing `module` loads from the repository."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        for depth in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:depth]), root)
            if path is None or path in seen:
                continue
            seen.add(path)
            todo.extend(imported_names(path, root))
    return {path.relative_to(root).as_posix() for path in seen}


def stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def stage_module(stage: dict) -> str:
    found = STAGE_MODULE.findall(" ".join(str(stage["cmd"]).split()))
    assert len(found) == 1, f"expected one `python -m pipeline.<name>` in cmd {stage['cmd']!r}"
    return found[0]


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep.rstrip("/") or path.startswith(dep.rstrip("/") + "/") for dep in deps)


STAGES = stages()


def test_every_stage_runs_a_pipeline_module():
    assert STAGES, "dvc.yaml has no stages"
    for name, stage in STAGES.items():
        assert module_file(stage_module(stage)) is not None, f"stage {name}: {stage_module(stage)} is not a file"


def test_closure_finds_known_edges():
    closure = import_closure("pipeline.train")
    # direct import, an import of an import, the package __init__ files on the way
    for path in (
        "pipeline/__init__.py",
        "pipeline/train.py",
        "cgstvg/__init__.py",
        "cgstvg/engine/__init__.py",
        "cgstvg/engine/train_loop.py",
        "cgstvg/model/criterion.py",
        "cgstvg/engine/frozen_backbones.py",
        "cgstvg/engine/features.py",
    ):
        assert path in closure, f"{path} missing from the closure of pipeline.train"
    assert all(path.startswith(("cgstvg/", "pipeline/")) for path in closure)
    # `from cgstvg.data.synthetic import SynthesizeConfig` loads the package's __init__ and what it imports
    synthesize = import_closure("pipeline.synthesize")
    assert {"cgstvg/data/synthetic/__init__.py", "cgstvg/data/synthetic/dataset.py"} <= synthesize
    assert "cgstvg/engine/train_loop.py" not in synthesize


def test_closure_follows_relative_and_submodule_imports(tmp_path):
    files = {
        "pipeline/__init__.py": "",
        "pipeline/stage.py": "from cgstvg.sub import helper\nimport cgstvg.other\n",
        "cgstvg/__init__.py": "",
        "cgstvg/sub/__init__.py": "from .inner import thing\n",
        "cgstvg/sub/inner.py": "from ..leaf import x\nfrom . import sibling\n",
        "cgstvg/sub/sibling.py": "",
        "cgstvg/sub/helper.py": "",
        "cgstvg/leaf.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import cgstvg.typed_only\n",
        "cgstvg/typed_only.py": "",
        "cgstvg/other.py": "import os\n",
        "cgstvg/unused.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    unreached = {"cgstvg/typed_only.py", "cgstvg/unused.py"}
    assert import_closure("pipeline.stage", tmp_path) == set(files) - unreached


def test_directory_dep_covers_files_under_it():
    assert covered("cgstvg/model/head.py", ["cgstvg/model"])
    assert covered("cgstvg/model/head.py", ["cgstvg/model/"])
    assert covered("cgstvg/model/head.py", ["cgstvg/model/head.py"])
    assert not covered("cgstvg/model_extra.py", ["cgstvg/model"])
    assert not covered("cgstvg/model/head.py", ["cgstvg/engine"])


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_cover_its_import_closure(name):
    stage = STAGES[name]
    closure = import_closure(stage_module(stage))
    missing = sorted(path for path in closure if not covered(path, stage.get("deps", [])))
    assert not missing, f"stage {name}: dvc.yaml deps miss files its module imports: {missing}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_imports_no_other_stage(name):
    own = module_file(stage_module(STAGES[name])).relative_to(REPO).as_posix()
    others = sorted(
        path
        for path in import_closure(stage_module(STAGES[name]))
        if path.startswith("pipeline/") and path not in (own, "pipeline/__init__.py")
    )
    assert not others, f"stage {name} imports other stages' modules: {others}"
