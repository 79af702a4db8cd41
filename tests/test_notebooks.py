"""The notebooks in notebooks/ run on the outputs of a mini reproduction.

A tiny recipe (digits at 16 px; a baseline arm and an arm regularized toward the
predictions of a tiny digital twin of a simulated mouse V1 population; 2 seeds) is run
with ``neuroreg repro`` into a temporary folder; each notebook is executed with its
``parameters`` cell pointing there (papermill's convention: the values are injected in a
cell right after the one tagged ``parameters``), in a kernel of this interpreter.
"""

import ast
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("robustness", "twin_diagnostics", "representations")

nbformat = pytest.importorskip("nbformat")

CONFIG = """
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_epochs: 2
  limit_train_batches: 6
  limit_val_batches: 1
  deterministic: true
  enable_model_summary: false
model:
  class_path: neuroreg.models.classifier.RegularizedClassifier
  init_args:
    backbone:
      class_path: neuroreg.models.backbones.SmallResNet
      init_args: {in_channels: 1, widths: [8, 16]}
    regularizers: REGS
    mean: [0.3]
    std: [0.32]
    optimizer:
      class_path: torch.optim.AdamW
      init_args: {lr: 0.01}
data:
  class_path: neuroreg.data.datamodules.RegularizedDataModule
  init_args:
    images:
      class_path: neuroreg.data.images.Digits
      init_args: {size: 16, split_seed: 0}
    targets: TARGETS
    batch_size: 64
    eval_batch_size: 256
"""

SIMILARITY = "{similarity: {class_path: neuroreg.regularizers.SimilarityRegularizer, init_args: {layers: [layer1], weight: 1.0}}}"

# a twin of 24 neurons fitted for 2 epochs on 160 noise images: seconds, not minutes
TWIN = """
      class_path: neuroreg.targets.twin.TwinTargets
      init_args:
        config: experiments/twin/sim_mouse_v1.yaml
        overrides:
          - --trainer.max_epochs=2
          - --model.init_args.core.init_args.hidden_channels=4
          - --model.init_args.core.init_args.input_kernel=5
          - --model.init_args.core.init_args.hidden_kernel=3
          - --data.init_args.recording.init_args.population.init_args.n_neurons=24
          - --data.init_args.recording.init_args.n_train=160
          - --data.init_args.recording.init_args.n_validation=32
          - --data.init_args.recording.init_args.n_test=40
          - --data.init_args.recording.init_args.test_repeats=4
          - --data.init_args.recording.init_args.cache_dir=CACHE/recordings
        splits: [train]
        cache_dir: CACHE/targets"""

RECIPE = """
title: "Notebook test recipe"
reference: "none"
scales:
  mini:
    description: "digits 16 px; a tiny twin of 24 simulated mouse V1 neurons"
    arms:
      baseline: baseline.yaml
      twin: twin.yaml
    baseline: baseline
    eval:
      suite: quick
      budget: {max_images: 64, corruptions: [gaussian_noise, contrast], severities: [1, 3, 5], linf_epsilons: [0.0, 0.0078431, 0.0156863],
               l2_epsilons: [0.0, 0.25], minimal_images: 0, square_images: 0, decision_images: 0, check_images: 16, pgd_steps: 3,
               noise_sigmas: [0.0, 0.1, 0.2]}
"""


@pytest.fixture(scope="module")
def mini_repro(tmp_path_factory):
    """``(OUT, workdir)`` of a finished 2-arm × 2-seed reproduction with a twin."""
    from neuroreg.cli import main

    root = tmp_path_factory.mktemp("nbrepro")
    recipe = root / "recipe"
    recipe.mkdir()
    (recipe / "baseline.yaml").write_text(CONFIG.replace("REGS", "{}").replace("TARGETS", "null"))
    (recipe / "twin.yaml").write_text(CONFIG.replace("REGS", SIMILARITY).replace(" TARGETS", TWIN.replace("CACHE", str(root / "cache"))))
    (recipe / "recipe.yaml").write_text(RECIPE)
    out = root / "out"
    before = Path.cwd()
    os.chdir(root)
    try:
        # two stages at a time, each a submitit job with its own log
        assert main(["repro", str(recipe), "--seeds", "2", "--out", str(out), "--no-progress", "--jobs", "2"]) == 0
    finally:
        os.chdir(before)
    plan = json.loads((out / "repro.json").read_text())
    assert all((Path(s["folder"]) / "done.json").is_file() for s in plan["stages"])
    logs = sorted((out / "logs").glob("fit-*.log"))
    assert len(logs) == sum(s["kind"] == "fit" for s in plan["stages"])  # each fit ran as a job and logged
    return out, root


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """A ``python3`` kernel spec that runs this interpreter, found first (JUPYTER_PATH)."""
    pytest.importorskip("nbclient")
    from ipykernel.kernelspec import write_kernel_spec

    path = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(path / "kernels" / "python3")
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(path)
    yield "python3"
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


def execute(name: str, kernel: str, **parameters):
    """Run ``notebooks/<name>.ipynb`` with ``parameters`` injected after its parameters cell; the executed notebook."""
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in parameters.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(i + 1, cell)
    NotebookClient(nb, kernel_name=kernel, timeout=600, resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def outputs(nb, mime: str) -> list[str]:
    return [o["data"][mime] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") in ("execute_result", "display_data") and mime in o.get("data", {})]


def printed(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "stream")


# ---------------------------------------------------------------- static checks
@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_clean_parametrized_and_imports_only_neuroreg(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].metadata.get("tags") == ["parameters"]
    assert {"repro_dir", "workdir"} <= {t.id for s in ast.parse(code[0].source).body for t in getattr(s, "targets", [])}
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks without outputs"
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= len(code) // 2, "explain what each plot shows"
    for c in code:
        source = "\n".join(line for line in c.source.splitlines() if not line.startswith("%"))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] == "neuroreg" for a in node.names), ast.unparse(node)
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] == "neuroreg", ast.unparse(node)


# ----------------------------------------------------------------- execution
@pytest.mark.slow
def test_robustness_notebook(mini_repro, kernel):
    out, workdir = mini_repro
    nb = execute("robustness", kernel, repro_dir=str(out), workdir=str(workdir))
    assert len(outputs(nb, "image/png")) == 1
    tables = outputs(nb, "text/markdown")
    summary = json.loads((out / "report" / "summary.json").read_text())
    clean = {a: summary["arms"][a]["metrics"]["eval/clean_accuracy"] for a in ("baseline", "twin")}
    comparison = next(t for t in tables if "value, mean ± 95 % CI" in t)
    row = next(line for line in comparison.splitlines() if line.startswith("| clean_accuracy"))
    # the table shows the reproduction report's numbers for every arm
    assert row == "| clean_accuracy | " + " | ".join(f"{clean[a]['mean']:.3f} ± {clean[a]['ci95']:.3f}" for a in ("baseline", "twin")) + " |"
    assert any("difference to `baseline`" in t and "| metric | twin |" in t for t in tables)
    assert "arms: ['baseline', 'twin']" in printed(nb)


@pytest.mark.slow
def test_twin_diagnostics_notebook(mini_repro, kernel):
    out, workdir = mini_repro
    nb = execute("twin_diagnostics", kernel, repro_dir=str(out), workdir=str(workdir))
    assert len(outputs(nb, "image/png")) == 3
    table = next(t for t in outputs(nb, "text/markdown") if "Twin on held-out images" in t)
    cells = [c.strip() for c in table.strip().splitlines()[-1].strip("|").split("|")]
    assert cells[:5] == ["default", "test", "40", "24", "4"]  # 40 test images, 24 neurons, 4 repeats
    oracle = float(cells[7])
    assert 0.0 < oracle <= 1.0  # simulated Poisson neurons are reliable but noisy
    assert float(cells[10]) >= 0.0  # median RF error in pixels, against the simulated centres
    assert "used by arms ['twin']" in printed(nb)


@pytest.mark.slow
def test_representations_notebook(mini_repro, kernel):
    out, workdir = mini_repro
    nb = execute("representations", kernel, repro_dir=str(out), workdir=str(workdir), per_class=6)
    assert len(outputs(nb, "image/png")) == 3  # RDMs, spectra, profiles
    tables = outputs(nb, "text/markdown")
    assert len(tables) == 3
    for t in tables:  # α, ridge predictivity and CKA per arm and layer
        lines = t.strip().splitlines()
        assert "| arm | layer1 | layer2 |" in lines
        assert [line.split("|")[1].strip() for line in lines[-2:]] == ["baseline", "twin"]
    alphas = [float(c.split("±")[0]) for c in tables[0].strip().splitlines()[-1].strip("|").split("|")[1:]]
    assert all(0.0 < a < 5.0 for a in alphas)
    cka = [float(c.split("±")[0]) for c in tables[2].strip().splitlines()[-1].strip("|").split("|")[1:]]
    assert all(0.0 <= c <= 1.0 for c in cka)
    assert "60 probe images" in printed(nb)  # 6 per class × 10 digits
