"""pyproject.toml and environment.yml declare the same dependencies; CI calls the README's test command; the package's
version and type-hint marker."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = {_norm(r) for r in project["dependencies"] + extras["pipeline"] + extras["test"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    declared = {_norm(r) for r in pip_section if not r.startswith("-e")}
    assert declared == wanted, f"only in environment.yml: {declared - wanted}; only in pyproject: {wanted - declared}"


def test_torch_pins_admit_the_local_wheels():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_req = next(d for d in project["dependencies"] if d.startswith("torch>") or d.startswith("torch="))
    vision_req = next(d for d in project["optional-dependencies"]["pipeline"] if d.startswith("torchvision"))
    assert "2.14.1" in torch_req and "0.29.1" in vision_req
    setup = (ROOT / "setup.sh").read_text()
    assert "torch==${TORCH_VERSION:-2.14.1}" in setup and "torchvision==${TORCHVISION_VERSION:-0.29.1}" in setup


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Two commands on a fresh machine\n\n```bash\n(.*?)```", readme, re.S).group(1)
    setup_cmd, test_cmd = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci
    assert setup_cmd.split("&&")[0].strip() in ci


# Import names of the pipeline extra's distributions (where they differ from the distribution name).
_IMPORT_NAME = {"pyyaml": "yaml", "jupyter": None, "snakemake-executor-plugin-slurm": None}
CORE_MODULES = ["moments", "analytic", "metrics", "posteriors", "estimators", "models", "elbo", "algorithm1",
                "training.io", "training.data", "training.methods", "training.history", "training.run",
                "training.engine", "training.diagnostics", "pipeline.paths"]


def test_core_library_imports_and_runs_without_the_pipeline_extra():
    """`pip install silentvae` (torch + numpy) is enough for the library and the README's SG example: every core
    module imports, and the example runs, with the pipeline extra's packages made unimportable."""
    import subprocess
    import sys

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["pipeline"]
    names = [re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower() for r in extra]
    blocked = sorted(filter(None, (_IMPORT_NAME.get(n, n.replace("-", "_")) for n in names)))
    assert {"torchvision", "yaml", "snakemake", "pandas", "matplotlib", "mlxtend"} <= set(blocked)
    section = (ROOT / "README.md").read_text().split("## Use Silent Gradients in your own VAE", 1)[1]
    examples = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    assert len(examples) == 3
    program = f"""
import sys, importlib.abc, importlib.machinery
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    # A blocked package is found (spec without origin, so torch's optional-package probes skip it) but fails to load.
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, self)
    def create_module(self, spec):
        raise ModuleNotFoundError(f"{{spec.name}} is not installed (pipeline extra)", name=spec.name)
    def exec_module(self, module):
        pass
sys.meta_path.insert(0, Block())
import importlib, torch
for m in {CORE_MODULES!r}:
    importlib.import_module("silentvae." + m)
for example in {examples!r}:
    exec(example, {{}})
leaked = sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)
assert not leaked, leaked
print("core ok")
"""
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "core ok" in done.stdout, done.stderr[-3000:]


def test_version_matches_pyproject_and_the_package_ships_py_typed():
    import silentvae

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert silentvae.__version__ == project["project"]["version"]
    assert (ROOT / "silentvae" / "py.typed").is_file()
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["silentvae"]
