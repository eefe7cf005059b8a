"""The folders are the floors: the library a researcher imports (``silentvae``: moments, analytic, elbo, ...),
then ``silentvae.training``, ``silentvae.pipeline`` and ``silentvae.report``; each imports only floors below it
(and its own). Read from the source's import statements (relative ones resolved), so CI keeps the layering."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "silentvae"
#: floor of each part of the package, bottom-up
FLOORS = {"silentvae": 0, "silentvae.training": 1, "silentvae.pipeline": 2, "silentvae.report": 3}
LIBRARY = {"moments", "analytic", "posteriors", "estimators", "models", "elbo", "algorithm1", "metrics"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the silentvae modules ``path`` imports (``from . import x`` gives ``pkg.x``)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import name``: pkg (name may be a function); ``from . import module``: the module
            found |= {f"{base}.{a.name}" for a in node.names} if node.module is None else {base}
    return {name for name in found if name == "silentvae" or name.startswith("silentvae.")}


def _floor(module: str) -> int:
    """Floor of a module: its subpackage's, or the library's for ``silentvae.<module>``."""
    parts = module.split(".")
    return FLOORS.get(".".join(parts[:2]), 0)


def _upward(paths) -> list[str]:
    return sorted(f"{_module_name(p)} -> {name}" for p in paths for name in _imports(p)
                  if _floor(name) > _floor(_module_name(p)))


def test_no_module_imports_a_floor_above_its_own():
    assert _upward(PACKAGE.rglob("*.py")) == []


def test_the_library_is_the_top_level_modules_and_needs_no_floor_above():
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert top == LIBRARY
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == {
        "training", "pipeline", "report"}


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """Not vacuous: a library module importing training, or training importing the report, is found."""
    fake = tmp_path / "silentvae"
    (fake / "training").mkdir(parents=True)
    (fake / "elbo.py").write_text("from .training import run\nfrom . import moments\n")
    (fake / "training" / "engine.py").write_text("from ..report.stats import welch\nfrom ..moments import x\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert _upward(fake.rglob("*.py")) == ["silentvae.elbo -> silentvae.training",
                                           "silentvae.training.engine -> silentvae.report.stats"]


@pytest.mark.parametrize("name", ["silent_elbo", "LinearDecoder", "split_gradient", "bits_per_dim"])
def test_public_names_stay_importable_from_the_top(name):
    import silentvae

    assert name in silentvae.__all__ and getattr(silentvae, name) is not None
