"""The results layout (silentvae.pipeline.paths): the folder checks, and no results path spelled outside paths.py."""

import ast
import multiprocessing
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from silentvae.pipeline.paths import OWNER_FILE, check_results_dir
from silentvae.pipeline.plan import load_config, validate_config

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


@pytest.mark.parametrize("results, message", [("", "results' is empty"), ("/", "filesystem root"),
                                              ("/.", "filesystem root"), ("a/../..", None)])
def test_results_folder_empty_or_root_is_refused(tmp_path, results, message):
    workdir = tmp_path / "w"
    workdir.mkdir()
    if message is None:  # resolves to tmp_path: allowed
        assert check_results_dir(results, workdir) == tmp_path
        return
    with pytest.raises(ValueError, match=message):
        check_results_dir(results, workdir)
    if results in ("", "/"):  # the schema says so too, before any path is built
        cfg = load_config(ROOT / "config" / "paper.yaml")
        with pytest.raises(ValueError, match="invalid config at 'results'"):
            validate_config({**cfg, "results": results})


def test_results_folder_of_another_working_directory_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    shared = str(tmp_path / "shared")
    check_results_dir(shared, a)  # a check writes nothing
    assert not (tmp_path / "shared").exists()
    assert check_results_dir(shared, a, claim=True) == tmp_path / "shared"
    assert (tmp_path / "shared" / OWNER_FILE).read_text() == f"{a}\n"
    check_results_dir(shared, a, claim=True)  # its owner goes on
    with pytest.raises(ValueError, match=f"belongs to the Snakemake working directory {a}.*this one \\({b}\\)"):
        check_results_dir(shared, b)
    # the Snakefile checks it before planning any job
    res = subprocess.run([*SNAKEMAKE, "-n", "--cores", "1", "--config", f"results={shared}", f"data_root={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and f"belongs to the Snakemake working directory {a}" in res.stdout + res.stderr


def _claim_at(results, workdir, start, queue):
    time.sleep(max(0.0, start - time.time()))  # every process claims at the same moment
    try:
        check_results_dir(results, workdir, claim=True)
        queue.put(("won", str(workdir)))
    except ValueError as e:
        queue.put(("refused", str(e)))


def test_concurrent_claims_of_one_results_folder_have_one_winner(tmp_path):
    """Processes of different working directories claiming one results folder at the same moment: exactly one
    gets it, every other is refused naming the winner (the claim is an atomic create, not check-then-write)."""
    ctx = multiprocessing.get_context("fork")
    for trial in range(20):
        results = tmp_path / f"results{trial}"
        workdirs = [tmp_path / f"w{trial}_{k}" for k in range(6)]
        queue = ctx.Queue()
        start = time.time() + 0.3
        procs = [ctx.Process(target=_claim_at, args=(str(results), w, start, queue)) for w in workdirs]
        for proc in procs:
            proc.start()
        outcomes = [queue.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join()
        winners = [w for kind, w in outcomes if kind == "won"]
        assert len(winners) == 1, outcomes
        assert (results / OWNER_FILE).read_text() == f"{winners[0]}\n"
        assert all(f"belongs to the Snakemake working directory {winners[0]}" in m for kind, m in outcomes
                   if kind == "refused")
        assert sorted(p.name for p in results.iterdir()) == [OWNER_FILE]  # no temporary file left


# A results-folder path: a layout folder followed by "/", or a file the pipeline's outputs are named by.
RESULTS_PATH = re.compile(r"(?:^|/)(?:runs|selected|training|logs|stacks)/|/(?:tables|figures)$|"
                          r"result\.json|last\.pt|report\.(?:html|ipynb)")
# Names of a run folder's files live in training/run_files.py (the trainer writes them, paths builds on them).
TRAINER = {"run_files.py", "paths.py"}


def _code_strings(path):
    """(line, text) of each string constant of a Python file that is not a docstring."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_results_path_is_spelled_outside_paths_py():
    """silentvae.pipeline.paths owns the results layout: the Snakefile, the jobs, the report's collectors and the tools
    ask it for every path (a layout change is one edit)."""
    sources = [p for p in (ROOT / "silentvae").rglob("*.py") if p.name not in TRAINER]
    sources += [ROOT / "tools" / "make_report_fixture.py", ROOT / "tools" / "lr_grid.py"]
    spelled = [f"{p.name}:{line}: {text!r}" for p in sources for line, text in _code_strings(p)
               if RESULTS_PATH.search(text)]
    for number, line in enumerate((ROOT / "Snakefile").read_text().splitlines(), 1):  # R: the results folder
        if re.search(r"\{R\}|\bR \+|\(R\) /", line.split("#")[0]):
            spelled.append(f"Snakefile:{number}: {line.strip()}")
    assert spelled == []


def test_the_check_sees_a_spelled_path(tmp_path):
    """The check above is not vacuous: a spelled path in a string is found, a docstring is not."""
    module = tmp_path / "m.py"
    module.write_text('"""Writes <results>/runs/<id>/result.json."""\nPATH = f"{root}/runs/{run_id}"\n')
    assert [text for _, text in _code_strings(module) if RESULTS_PATH.search(text)] == ["/runs/"]
