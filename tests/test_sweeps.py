"""W&B sweep files: the expander against wandb's own agent code, and one point of every
sweep under experiments/sweeps/ run with ``fast_dev_run``."""

import math
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml

from neuroreg.cli import main as neuroreg_main
from neuroreg.cli import run_cli
from neuroreg.evaluation.callbacks import RobustnessEvaluation
from neuroreg.sweeps import Sweep, SweepError, agent_args, load_sweep, main

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "experiments" / "sweeps").glob("*.yaml"))
#: appended to every point run here: one batch of each loop, and a 16-image robustness evaluation
FAST = ["--trainer.fast_dev_run=true", "--data.init_args.eval_batch_size=16"]


def sweep_of(parameters, method="grid", **fields):
    fields.setdefault("command", ["${env}", "neuroreg", "fit", "${args}"])
    return Sweep.from_dict({"method": method, "parameters": parameters, **fields}, source="test.yaml")


def write(tmp_path, config, name="bad.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config) if isinstance(config, dict) else config)
    return path


def wandb_agent_argv(sweep, point, tmp_path, monkeypatch):
    """The argv wandb's own agent (``Agent._command_run``) builds for ``point``."""
    from wandb import wandb_agent

    captured = {}

    class Capture:
        def __init__(self, command=None, **kwargs):
            captured["argv"] = command

    monkeypatch.setattr(wandb_agent, "AgentProcess", Capture)
    for var in ("WANDB_DIR", "WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH"):
        monkeypatch.setenv(var, str(tmp_path) if var == "WANDB_DIR" else "test")
    agent = wandb_agent.Agent(api=None, queue=None)
    agent._sweep_command = list(sweep.template)
    agent._command_run({"args": {k: {"value": v} for k, v in point.items()}, "run_id": "run0", "program": sweep.program})
    return captured["argv"]


# ---------------------------------------------------------------------- points
def test_grid_is_the_product_in_sorted_parameter_order():
    sweep = sweep_of({"b": {"values": [1, 2, 3]}, "a": {"values": ["x", "y"]}, "c": {"value": 0.5}})
    assert sweep.size == 6
    points = sweep.points()
    assert [(p["a"], p["b"]) for p in points] == [("x", 1), ("x", 2), ("x", 3), ("y", 1), ("y", 2), ("y", 3)]
    assert all(p["c"] == 0.5 for p in points) and list(points[0]) == ["a", "b", "c"]
    assert sweep.points(4) == points[:4] and sweep.point(5) == points[5]
    with pytest.raises(IndexError, match=r"0\.\.5 \(the grid has 6 points\), found 6"):
        sweep.point(6)


def test_grid_expands_ranges_as_wandb_and_drops_repeats():
    sweep = sweep_of({
        "i": {"min": 1, "max": 3},                                         # int_uniform: 1..3 inclusive
        "q": {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25},  # arange: max excluded
        "r": {"values": [7, 7, [1, 2], [1, 2]]},
    })
    assert list(sweep.parameters) == ["i", "q", "r"]
    points = sweep.points()
    visited = {name: [] for name in sweep.parameters}  # each parameter's values, in the order the grid visits them
    for point in points:
        for name, value in point.items():
            if value not in visited[name]:
                visited[name].append(value)
    assert sweep.parameters["i"]["distribution"] == "int_uniform" and visited["i"] == [1, 2, 3]
    assert visited["q"] == [0.0, 0.25, 0.5, 0.75]
    assert visited["r"] == [7, [1, 2]]
    assert sweep.size == len(points) == 3 * 4 * 2


def test_random_points_are_seeded_and_drawn_from_their_distributions():
    sweep = sweep_of({
        "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
        "n": {"distribution": "int_uniform", "min": 2, "max": 5},
        "w": {"distribution": "q_uniform", "min": 0.0, "max": 2.0, "q": 0.5},
        "k": {"distribution": "q_log_uniform_values", "min": 1, "max": 1000, "q": 1},
        "z": {"distribution": "normal", "mu": 3.0, "sigma": 0.5},
        "c": {"values": ["a", "b"], "probabilities": [0.8, 0.2]},
        "be": {"distribution": "beta", "a": 2.0, "b": 5.0},
        "inv": {"distribution": "inv_log_uniform_values", "min": 0.1, "max": 10.0},
        "ln": {"distribution": "log_normal", "mu": 1.0, "sigma": 0.5},
    }, method="random")
    assert sweep.size is None
    a, b = sweep.points(400, seed=7), sweep.points(400, seed=7)
    assert a == b and sweep.point(123, seed=7) == a[123]
    assert sweep.points(5, seed=8) != a[:5]
    lr = np.log10([p["lr"] for p in a])
    assert lr.min() >= -4 and lr.max() <= -1 and abs(lr.mean() + 2.5) < 0.15  # uniform in log10: mean -2.5
    assert {p["n"] for p in a} == {2, 3, 4, 5} and all(type(p["n"]) is int for p in a)
    assert all(p["w"] in (0.0, 0.5, 1.0, 1.5, 2.0) and type(p["w"]) is float for p in a)
    assert all(type(p["k"]) is int and 1 <= p["k"] <= 1000 for p in a)
    z = np.array([p["z"] for p in a])
    assert abs(z.mean() - 3.0) < 0.1 and abs(z.std() - 0.5) < 0.1
    assert 0.7 < np.mean([p["c"] == "a" for p in a]) < 0.9
    assert abs(np.mean([p["be"] for p in a]) - 2 / 7) < 0.03
    inv = np.log10([p["inv"] for p in a])
    assert inv.min() >= -1 and inv.max() <= 1 and abs(inv.mean()) < 0.1
    assert abs(np.mean(np.log([p["ln"] for p in a])) - 1.0) < 0.1
    with pytest.raises(ValueError, match="has no end"):
        sweep.points()


def test_random_point_is_the_inverse_cdf_of_one_seeded_uniform_draw_per_parameter():
    """Point i of seed s: one ``default_rng([s, i]).random()`` per parameter, in sorted name
    order, through its distribution's inverse CDF (written out here as a reference)."""
    sweep = sweep_of({
        "w": {"distribution": "log_uniform_values", "min": 0.01, "max": 10.0},
        "c": {"values": ["a", "b", "c"]},
        "k": {"value": 4},
        "n": {"distribution": "int_uniform", "min": 2, "max": 5},
        "u": {"distribution": "uniform", "min": -1.0, "max": 3.0},
    }, method="random")
    for seed, index in [(0, 0), (0, 39), (5, 2), (2**40, 7)]:
        rng = np.random.default_rng([seed, index])
        c, _, n, u, w = (rng.random() for _ in range(5))  # the constant k takes a draw too
        point = sweep.point(index, seed)
        assert list(point) == ["c", "k", "n", "u", "w"]
        assert point["c"] == "abc"[int(c * 3)] and point["k"] == 4 and point["n"] == 2 + int(n * 4)
        assert point["u"] == -1.0 + u * 4.0
        assert math.isclose(point["w"], math.exp(math.log(0.01) + w * (math.log(10.0) - math.log(0.01))), rel_tol=1e-14)
        assert sweep.point(index, seed) == point and sweep.point(index, seed + 1) != point


def test_nested_parameters_become_one_dict_per_top_level_name():
    sweep = sweep_of({
        "model.init_args.optimizer.init_args": {"parameters": {"lr": {"values": [0.01, 0.1]}, "eps": {"value": 1e-08}}},
        "seed_everything": {"value": 3},
    })
    assert list(sweep.parameters) == [
        "model.init_args.optimizer.init_args.eps", "model.init_args.optimizer.init_args.lr", "seed_everything"]
    point = sweep.point(1)
    assert point == {"model.init_args.optimizer.init_args": {"eps": 1e-08, "lr": 0.1}, "seed_everything": 3}
    assert list(point) == ["seed_everything", "model.init_args.optimizer.init_args"]  # plain first, as wandb's to_config
    assert agent_args(point)["args"] == ["--seed_everything=3", "--model.init_args.optimizer.init_args={'eps': 1e-08, 'lr': 0.1}"]


def test_nested_block_is_merged_into_the_config_by_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sweep = sweep_of({"model.init_args.optimizer.init_args": {"parameters": {"lr": {"values": [0.02]}, "eps": {"value": 1e-07}}}},
                     command=["${env}", "neuroreg", "fit", "--config", "experiments/quickstart.yaml", "${args}", "--print_config"])
    with pytest.raises(SystemExit) as exit_info:
        neuroreg_main(sweep.cli_args(sweep.point(0)))
    assert exit_info.value.code in (0, None)
    optimizer = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["optimizer"]["init_args"]
    assert (optimizer["lr"], optimizer["eps"], optimizer["weight_decay"]) == (0.02, 1e-07, 0.0005)  # the rest kept


# ---------------------------------------------------------------------- commands, checked against wandb
def test_argument_forms_match_wandb():
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    point = {"a": 1e-05, "b": 0.1, "c": True, "d": False, "e": ["layer1", "layer2"], "f": {"lr": 0.01, "x": [1, 2]}, "g": "s", "h": 3}
    ours = agent_args(point)
    theirs = create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})
    assert {k: theirs[k] for k in ours} == ours
    assert ours["args"] == ["--a=1e-05", "--b=0.1", "--c=True", "--d=False", "--e=['layer1', 'layer2']",
                            "--f={'lr': 0.01, 'x': [1, 2]}", "--g=s", "--h=3"]
    assert ours["args_no_boolean_flags"][2:4] == ["--c", "--e=['layer1', 'layer2']"]


def test_every_macro_expands_as_wandbs_agent(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROREG_TEST_DEVICE", "cpu")
    template = ["${env}", "${interpreter}", "${program}", "--device=${envvar:NEUROREG_TEST_DEVICE}",
                "${envvar:NEUROREG_TEST_UNSET}", *(f"${{{m}}}" for m in (
                    "args", "args_no_hyphens", "args_no_equals", "args_no_boolean_flags", "args_json",
                    "args_append_hydra", "args_override_hydra"))]
    sweep = sweep_of({"flag": {"values": [True, False]}, "w": {"values": [0.5]}, "o": {"parameters": {"k": {"value": [1]}}}},
                     program="train.py", command=template)
    for point in sweep.points():
        ours = sweep.command(point)
        assert ours == wandb_agent_argv(sweep, point, tmp_path, monkeypatch)
    assert ours[:5] == ["/usr/bin/env", "python", "train.py", "--device=cpu", "NEUROREG_TEST_UNSET"]
    assert "--flag=False" in ours and "--o={'k': [1]}" in ours


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_shipped_sweep_commands_match_wandbs_agent(path, tmp_path, monkeypatch):
    sweep = load_sweep(path)
    points = [sweep.point(0), sweep.point(sweep.size - 1)] if sweep.size else sweep.points(3)
    for point in points:
        assert sweep.command(point) == wandb_agent_argv(sweep, point, tmp_path, monkeypatch)


# ---------------------------------------------------------------------- the shipped sweep files
def test_every_asked_sweep_exists():
    names = {p.stem for p in SWEEPS}
    assert {"similarity_weight", "similarity_layer", "spectral_alpha", "target_source"} <= names
    assert any(load_sweep(p).method == "random" for p in SWEEPS)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_shipped_sweep_is_documented_and_runs_neuroreg_fit(path):
    sweep = load_sweep(path)
    head = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    rel = path.relative_to(ROOT)
    assert f"wandb sweep {rel}" in head and "wandb agent ENTITY/PROJECT/ID" in head
    assert f"neuroreg sweep run {rel} --index" in head and f"neuroreg sweep expand {rel}" in head
    assert sweep.program and (ROOT / sweep.program).is_file()
    assert sweep.metric["name"] and sweep.metric["goal"] == "maximize"
    t = sweep.template
    assert t[:5] == ("${env}", "neuroreg", "fit", "--config", t[4]) and (ROOT / t[4]).is_file() and t[-1] == "${args}"
    assert "--trainer.logger=pytorch_lightning.loggers.WandbLogger" in t  # the agent's runs report to W&B
    if sweep.method == "grid":
        assert sweep.size == len(sweep.points()) >= 6


def test_cli_args_find_shipped_configs_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = load_sweep(ROOT / "experiments" / "sweeps" / "similarity_weight.yaml")
    args = sweep.cli_args(sweep.point(7))
    assert args[:3] == ["fit", "--config", str(ROOT / "experiments" / "quickstart.yaml")]
    assert args[-2:] == ["--model.init_args.regularizers.similarity.init_args.weight=0.3", "--seed_everything=1"]
    other = sweep_of({"a": {"value": 1}}, command=["python", "-m", "neuroreg.cli", "fit", "--config=experiments/quickstart.yaml", "${args}"])
    assert other.cli_args(other.point(0)) == ["fit", f"--config={ROOT / 'experiments' / 'quickstart.yaml'}", "--a=1"]
    foreign = sweep_of({"a": {"value": 1}}, command=["${env}", "python", "train.py", "${args}"])
    with pytest.raises(SweepError, match=r"test.yaml: field 'command': expected a command that runs neuroreg"):
        foreign.cli_args(foreign.point(0))


# ---------------------------------------------------------------------- errors
GOOD = {"method": "grid", "parameters": {"a": {"values": [1, 2]}}, "command": ["${env}", "neuroreg", "fit", "${args}"]}


@pytest.mark.parametrize("change, field, words", [
    ({"command": ["${env}", "neuroreg", "${argz}"]}, "command[2]", "${argz}"),
    ({"command": ["neuroreg", "--x=${args}"]}, "command[1]", "whole-entry macro"),
    ({"command": ["neuroreg", "${args_json_file}"]}, "command[1]", "not supported"),
    ({"command": ["${program}", "${args}"]}, "program", "sets no program"),
    ({"parameters": None}, "parameters", "missing"),
    ({"parameters": {}}, "parameters", "non-empty mapping"),
    ({"parameters": {"a": {"distribution": "gaussian", "mu": 0}}}, "parameters.a.distribution", "found 'gaussian'"),
    ({"parameters": {"a": {"distribution": "log_uniform", "min": -3, "max": 0}}}, "parameters.a.distribution", "log_uniform_values"),
    ({"parameters": {"a": {"min": 0.1, "max": 1.0}}}, "parameters.a", "a grid takes"),
    ({"method": "random", "parameters": {"a": {"distribution": "log_uniform_values", "min": "1e-5", "max": 1.0}}},
     "parameters.a.min", "write e.g. 1.0e-5"),
    ({"method": "random", "parameters": {"a": {"distribution": "log_uniform_values", "min": 0.0, "max": 1.0}}},
     "parameters.a.min", "needs min > 0"),
    ({"parameters": {"a": {"min": 3, "max": 3}}}, "parameters.a", "min < max"),
    ({"parameters": {"a": {"values": [1], "probability": [1]}}}, "parameters.a", "unexpected ['probability']"),
    ({"parameters": {"a": {"values": [{"x": None}]}}}, "parameters.a.values[0]['x']", "'None'"),
    ({"parameters": {"a": {"parameters": {"b": {"values": [1]}}, "value": 1}}}, "parameters.a", "only 'parameters'"),
    ({"parameters": {"2a": {"value": 1}}}, "parameters", "must match"),
    ({"method": "hyperband"}, "method", "found 'hyperband'"),
    ({"method": "bayes"}, "metric", "needs a metric"),
    ({"metric": {"name": "val/accuracy", "goal": "max"}}, "metric.goal", "found 'max'"),
    ({"paramters": {}}, "paramters", "not a wandb sweep field"),
])
def test_bad_sweep_file_names_file_and_field(tmp_path, change, field, words):
    config = {**GOOD, **change}
    if "parameters" in change and change["parameters"] is None:
        del config["parameters"]
    path = write(tmp_path, config)
    with pytest.raises(SweepError) as err:
        load_sweep(path)
    message = str(err.value)
    assert message.startswith(f"{path}: field '{field}'"), message
    assert words in message, message


def test_unreadable_sweep_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml: sweep file not found"):
        load_sweep(tmp_path / "nope.yaml")
    with pytest.raises(SweepError, match=r"bad\.yaml: line 2, column 1: cannot read YAML"):
        load_sweep(write(tmp_path, "method: [grid\n"))
    with pytest.raises(SweepError, match="expected a mapping of sweep fields, found list"):
        load_sweep(write(tmp_path, "- method\n"))


# ---------------------------------------------------------------------- the subcommand
def test_expand_prints_every_grid_point_shell_quoted(capsys):
    path = ROOT / "experiments" / "sweeps" / "target_source.yaml"
    sweep = load_sweep(path)
    assert neuroreg_main(["sweep", "expand", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == sweep.size == 15
    assert [shlex.split(line) for line in lines] == [sweep.command(p) for p in sweep.points()]
    assert main(["expand", str(path), "--index", "14"]) == 0
    assert shlex.split(capsys.readouterr().out) == sweep.command(sweep.point(14))


def test_expand_random_needs_a_count(capsys):
    path = ROOT / "experiments" / "sweeps" / "similarity_random.yaml"
    assert main(["expand", str(path), "--all"]) == 2
    assert "pass --count N" in capsys.readouterr().err
    assert main(["expand", str(path), "--all", "--count", "3", "--seed", "5"]) == 0
    sweep = load_sweep(path)
    assert [shlex.split(x) for x in capsys.readouterr().out.splitlines()] == [sweep.command(p) for p in sweep.points(3, seed=5)]
    assert main(["expand", str(ROOT / "experiments" / "sweeps" / "spectral_alpha.yaml"), "--index", "9"]) == 2
    assert "the grid has 9 points" in capsys.readouterr().err


def test_run_with_a_misspelt_parameter_fails_with_the_cli_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load((ROOT / "experiments" / "sweeps" / "similarity_weight.yaml").read_text())
    config["parameters"] = {"model.init_args.regularizers.similarity.init_args.wieght": {"values": [0.5]}}
    path = write(tmp_path, config, "typo.yaml")
    assert neuroreg_main(["sweep", "run", str(path), "--index", "0", "--", "--trainer.fast_dev_run=true"]) == 2
    err = capsys.readouterr().err
    assert "wieght" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.ckpt"))


# ---------------------------------------------------------------------- one point of each sweep, run
def _leaf(tree, dotted):
    """``tree[a][b]…`` for ``a.b…``; keys may contain dots only where the tree says so."""
    node, rest = tree, dotted
    while rest:
        key = next(k for k in sorted(node, key=len, reverse=True) if rest == k or rest.startswith(k + "."))
        node, rest = node[key], rest[len(key) + 1:]
    return node


def _contains(big, small):
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _contains(big[k], v) for k, v in small.items())
    if isinstance(small, float):
        return isinstance(big, (int, float)) and math.isclose(big, small, rel_tol=1e-12)
    return big == small


def _cases():
    for path in SWEEPS:
        sweep = load_sweep(path)
        for index in ([0, sweep.size - 1] if sweep.size else [0]):
            yield pytest.param(path, index, id=f"{path.stem}-{index}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One working folder for every point, so the quickstart's twin is fitted once and reused."""
    return tmp_path_factory.mktemp("sweep_points")


@pytest.mark.slow
@pytest.mark.parametrize("path, index", list(_cases()))
def test_sweep_point_fast_dev_run(path, index, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    sweep = load_sweep(path)
    point = sweep.point(index)
    cli = run_cli(sweep.cli_args(point) + FAST)
    assert cli.trainer.state.finished
    config = yaml.safe_load(cli.parser.dump(cli.config, skip_check=True))["fit"]
    for name, value in point.items():  # every swept value reached the config as written
        assert _contains(_leaf(config, name), value), (name, value, _leaf(config, name))
    assert config["trainer"]["logger"]["class_path"] == "pytorch_lightning.loggers.WandbLogger"
    logged = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    for callback in cli.trainer.callbacks:
        if isinstance(callback, RobustnessEvaluation):
            logged.update(callback.metrics(callback.report))
    assert sweep.metric["name"] in logged, sorted(logged)
    assert 0.0 <= logged[sweep.metric["name"]] <= 1.0
