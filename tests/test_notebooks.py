"""Execute every notebook in notebooks/ so they cannot rot (JAXDA_QUICK=1 shrinks their problems)."""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
# notebooks that train a network spend their time running, not compiling: their kernels run at
# XLA's default backend level (conftest.py lowers it to 0 for the suite, which made the U-Net
# training of diffusion_kolmogorov 4x slower: 102 s instead of 26 s)
TRAINING_NOTEBOOKS = {"diffusion_kolmogorov", "diffusion_l63"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("JAXDA_QUICK", "1")
    if path.stem in TRAINING_NOTEBOOKS:
        flags = os.environ.get("XLA_FLAGS", "").replace("--xla_backend_optimization_level=0", "")
        monkeypatch.setenv("XLA_FLAGS", flags)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend, as in Jupyter
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    assert not errors
    # notebooks that plot show their figures inline (no forced non-interactive backend)
    if any("matplotlib" in c.source for c in nb.cells if c.cell_type == "code"):
        images = [
            o
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.get("outputs", [])
            if o.output_type == "display_data" and "image/png" in o.get("data", {})
        ]
        assert images, f"{path.name} plots but displays no figure"


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ should contain the example notebooks"
    assert os.path.isdir(Path(__file__).parent.parent / "notebooks")
