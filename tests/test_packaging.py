"""pyproject.toml and environment.yml declare the same dependencies; CI calls the README's test command."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_norm(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    declared = {_norm(r) for r in pip_section if not r.startswith("-e")}
    assert declared == wanted, f"only in environment.yml: {declared - wanted}; only in pyproject: {wanted - declared}"


def test_torch_pins_admit_the_local_wheels():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_req = next(d for d in deps if d.startswith("torch>") or d.startswith("torch="))
    vision_req = next(d for d in deps if d.startswith("torchvision"))
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
