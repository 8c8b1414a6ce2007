"""Dependencies point one way: ``training`` imports the core, the core never imports ``training``.

Imports are read with ``ast`` (including those inside functions), so a lazy
``from training... import`` hidden in a function body is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "napari_medseg"

#: The only core modules allowed to import ``training`` (the recipe-training commands).
MAY_IMPORT_TRAINING = {"commands/train.py", "commands/evaluate.py"}
#: The napari adapters (and ``medseg view``, which opens a viewer): the only core modules importing napari or Qt.
MAY_IMPORT_QT = ("widgets/", "_reader.py", "_writer.py", "_sample_data.py", "commands/view.py")
QT_OR_NAPARI = {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6"}


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports anywhere (relative imports resolved)."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    return imports_in(path.read_text(encoding="utf-8"), package)


def imports_in(source: str, package: str) -> set[str]:
    """Absolute names imported by ``source``, a module of ``package`` (dotted)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def top_levels(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_modules(path)}


def core_files():
    return sorted((str(p.relative_to(CORE)).replace("\\", "/"), p) for p in CORE.rglob("*.py"))


def test_core_never_imports_training():
    offenders = [rel for rel, path in core_files() if rel not in MAY_IMPORT_TRAINING and "training" in top_levels(path)]
    assert not offenders, f"napari_medseg modules importing training (move the code into the core): {offenders}"


def test_training_imports_the_core_not_private_names():
    for path in sorted((REPO / "training").glob("*.py")):
        private = [m for m in imported_modules(path) if m.startswith("napari_medseg") and m.rsplit(".", 1)[-1].startswith("_")
                   and not m.rsplit(".", 1)[-1].startswith("__")]
        assert not private, f"{path.name} imports private core names: {private}"


def test_core_outside_the_adapters_is_qt_and_napari_free():
    offenders = [rel for rel, path in core_files()
                 if not rel.startswith(MAY_IMPORT_QT) and top_levels(path) & QT_OR_NAPARI]
    assert not offenders, f"napari/Qt imported outside widgets/ and the reader/writer adapters: {offenders}"


def test_the_checker_sees_imports_inside_functions():
    """The rule would be toothless if lazy imports escaped it."""
    source = "def f():\n    from training.engine import Trainer\n    from ..labels import SYNAPSE\n"
    names = imports_in(source, "napari_medseg.retrain")
    assert "training.engine" in names and "napari_medseg.labels.SYNAPSE" in names
