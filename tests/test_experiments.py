"""Every config under experiments/ is exercised here.

Configs that run on the embedded data get a ``fast_dev_run`` fit (in a temporary
working directory, so their relative output paths land there). Configs that need
downloaded data or a GPU say so with a line ``# requires: download`` near the top;
they are parsed and validated with ``--print_config`` (every class path resolves,
every argument exists) but not run.
"""

from pathlib import Path

import pytest

from neuroreg.cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "experiments").rglob("*.yaml") if "sweeps" not in p.parts)


def needs_download(path: Path) -> bool:
    head = path.read_text().splitlines()[:15]
    return any(line.strip().startswith("# requires: download") for line in head)


def test_configs_exist():
    assert (ROOT / "experiments" / "quickstart.yaml") in CONFIGS


@pytest.mark.parametrize("config", [c for c in CONFIGS if not needs_download(c)], ids=lambda p: str(p.relative_to(ROOT)))
def test_config_fast_dev_run(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = run_cli(["fit", "--config", str(config), "--trainer.fast_dev_run=true"])
    assert cli.trainer.state.finished


@pytest.mark.parametrize("config", [c for c in CONFIGS if needs_download(c)] or [None], ids=lambda p: "none" if p is None else str(p.relative_to(ROOT)))
def test_full_scale_config_parses(config, capsys):
    if config is None:
        pytest.skip("no full-scale configs yet")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "class_path" in capsys.readouterr().out
