"""Schema check over every file in data_manifests/, and clear errors for bad ones."""

import copy
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from neuroreg.data.manifests import (
    ManifestError,
    find_manifest,
    load_manifest,
    load_manifests,
    parse_manifest,
)

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "data_manifests").glob("*.yaml"))


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_schema(path):
    m = load_manifest(path)
    assert m.name == path.stem
    for f in m.files:
        assert (f.sha256 is None) == (f.sha256_status == "unconfirmed")
    if m.kind == "neural":
        reader = m.reader()
        params = inspect.signature(reader).parameters
        for f in m.files:
            assert f.role in params, f"{path}: role {f.role} is not an argument of {m.reader_function}"
        unknown = set(m.reader_options) - set(params)
        assert not unknown, f"{path}: reader options {unknown} not accepted by {m.reader_function}"


def test_required_data_sets_present():
    names = set(load_manifests(ROOT / "data_manifests"))
    mice = ["21067-10-18", "22846-10-16", "23343-5-17", "23656-14-22", "23964-4-22", "26872-17-20", "27204-5-13"]
    required = {f"sensorium2022-{m}" for m in mice} | {
        "lurz2021-static20457-5-9", "cadena2019", "majajhong2015-public", "cifar10", "cifar100", "tinyimagenet",
    }
    assert required <= names
    assert any(n.startswith("allen-natural-scenes-") for n in names)


def test_nothing_imported_or_fetched_by_loading():
    code = (
        "import sys; from neuroreg.data.manifests import load_manifests; load_manifests(); "
        "print(sorted(m for m in sys.modules if m.startswith('neuroreg.data.readers.') or m == 'pooch'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


GOOD = yaml.safe_load((ROOT / "data_manifests" / "cadena2019.yaml").read_text())


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda r: r.pop("citation"), "citation"),
        (lambda r: r.update(species="cat"), "species"),
        (lambda r: r["files"][0].update(sha256="abc"), "files[0].sha256"),
        (lambda r: r["files"][0].update(sha256="a" * 64), "files[0].sha256_status"),
        (lambda r: r["files"][0].update(url="file:///etc/passwd"), "files[0].url"),
        (lambda r: r["files"][0].update(name="../x"), "files[0].name"),
        (lambda r: r["files"][0].update(size=-1), "files[0].size"),
        (lambda r: r["files"][0].update(format="exe"), "files[0].format"),
        (lambda r: r["files"][0].update(colour="red"), "files[0]"),
        (lambda r: r.update(files=[]), "files"),
        (lambda r: r["license"].update(non_commercial="yes"), "license.non_commercial"),
        (lambda r: r["reader"].update(function="os.system"), "reader.function"),
        (lambda r: r.update(extra=1), "<top level>"),
        (lambda r: r.update(name="Cadena 2019"), "name"),
    ],
)
def test_schema_errors_name_file_and_field(tmp_path, edit, field):
    raw = copy.deepcopy(GOOD)
    edit(raw)
    path = tmp_path / f"{raw.get('name', 'x') if raw.get('name') == GOOD['name'] else 'cadena2019'}.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert str(path) in str(err.value) and f"'{field}'" in str(err.value)


def test_name_must_match_file(tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    with pytest.raises(ManifestError, match="stem"):
        load_manifest(path)


def test_invalid_yaml_and_unknown_name(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(ManifestError, match=r"bad.yaml: line 1, column \d+: cannot read YAML"):
        load_manifest(tmp_path / "bad.yaml")
    with pytest.raises(KeyError, match="known: bad"):
        find_manifest("nothing", tmp_path)


def test_reader_import_errors_are_manifest_errors():
    raw = copy.deepcopy(GOOD)
    raw["reader"]["function"] = "neuroreg.data.readers.cadena.no_such_function"
    with pytest.raises(ManifestError, match="no function"):
        parse_manifest(raw).reader()
    assert importlib.import_module("neuroreg.data.readers.cadena")
