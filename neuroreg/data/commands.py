"""``neuroreg data list | info NAME | fetch NAME | verify NAME | convert NAME --out FILE.h5``.

``convert`` without NAME converts local array files (``--arrays FILE.npz`` or
``--responses R.npy --images I.npy``, see :func:`convert_local`); what was recorded
(``--species``, ``--area``, ``--unit``, ``--pixels-per-degree``) and the tiers (given, or
``--split``) must be stated, and every choice is printed and stored in the file.

The data directory is ``--data-dir``, else ``$NEUROREG_DATA_DIR``, else ``data/``;
manifests are read from ``--manifests`` (default: ``data_manifests/`` of the source
tree, or ``$NEUROREG_MANIFEST_DIR``).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
import warnings

import numpy as np
import yaml

from .fetch import (
    ChecksumError,
    FetchError,
    fetch,
    license_notice,
    local_path,
    resolve_data_dir,
    verify,
)
from .manifests import Manifest, ManifestError, find_manifest, load_manifests
from .readers.arrays import KEYS, LAYOUTS
from .recording import RESPONSE_UNIT_ALIASES, RESPONSE_UNITS, NeuralRecording, response_unit


def _parser() -> argparse.ArgumentParser:
    data_help = "download folder (default: $NEUROREG_DATA_DIR or data/)"
    manifests_help = "manifest folder (default: data_manifests/)"
    mirror_help = "download from <URL>/<path of the manifest URL> (default: $NEUROREG_DATA_MIRROR)"
    p = argparse.ArgumentParser(prog="neuroreg data", description="Public data sets: list, fetch, verify, convert.")
    p.add_argument("--data-dir", default=None, help=data_help)
    p.add_argument("--manifests", default=None, help=manifests_help)
    # the same options after the subcommand (SUPPRESS: absent ones keep the values above)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=argparse.SUPPRESS, help=data_help)
    common.add_argument("--manifests", default=argparse.SUPPRESS, help=manifests_help)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the known data sets", parents=[common])
    for name, text in (("info", "show a manifest"), ("verify", "check the checksums of downloaded files")):
        s = sub.add_parser(name, help=text, parents=[common])
        s.add_argument("name")
    s = sub.add_parser("fetch", help="download and verify a data set", parents=[common])
    s.add_argument("name")
    s.add_argument("--mirror", default=None, help=mirror_help)
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s = sub.add_parser(
        "convert", parents=[common], help="convert a fetched data set, or local array files, to a NeuralRecording .h5",
        description="convert NAME --out FILE.h5: a data set of the manifests. convert --arrays FILE.npz (or --responses "
        "R.npy --images I.npy) --species S --area A --unit U --pixels-per-degree P --out FILE.h5: local files, "
        "without a manifest (see neuroreg.data.readers.arrays.read_arrays).",
    )
    s.add_argument("name", nargs="?", default=None, help="a manifest's data set (omit for local files)")
    s.add_argument("--out", required=True, help="output .h5 file (written atomically)")
    s.add_argument("--trust-pickle", action="store_true", help="unpickle even without a confirmed sha256 (runs code!)")
    s.add_argument("--mirror", default=None, help=mirror_help + ", with --fetch")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="override a reader option (YAML value)")
    s.add_argument("--fetch", action="store_true", help="fetch missing files first")
    local = s.add_argument_group("local files (no NAME)")
    for flag, text in LOCAL_FILES.items():
        local.add_argument(flag, default=None, metavar="FILE", help=text)
    local.add_argument("--layout", default=None, choices=LAYOUTS, help="responses layout (default: the one that fits, if only one)")
    local.add_argument("--test-layout", default=None, choices=LAYOUTS, help="layout of the test set's responses")
    local.add_argument("--image-shape", default=None, metavar="C,H,W|H,W", help="shape of flattened [N, P] images")
    local.add_argument("--key", action="append", default=[], metavar="OURS=THEIRS",
                       help=f"array name in the .npz/.mat for one of {list(KEYS)}")
    local.add_argument("--split", default=None, metavar="TIER=FRAC,...",
                       help="seeded split of the images without tiers, e.g. validation=0.1,test=0.2 (the rest is train)")
    local.add_argument("--split-seed", type=int, default=None, help="seed of --split (default 0, printed and recorded)")
    for flag, text in LOCAL_META.items():
        local.add_argument(flag, default=None, help=text)
    local.add_argument("--standardize", action="store_true", default=None,
                       help="z-score each neuron over the train tier (for Gaussian losses); recorded in the file")
    local.add_argument("--source", default=None, help="a name for the data (default arrays:<files>)")
    local.add_argument("--citation", default=None, help="citation text stored in the file")
    local.add_argument("--license", default=None, help="license id stored in the file")
    return p


#: ``convert`` options naming local files -> help
LOCAL_FILES = {
    "--arrays": ".npz / .mat holding images, responses and optional trial_image, tiers, image_ids, neuron_ids",
    "--responses": ".npy responses: [N, K], [R, N, K], [N, R, K] or [T, K] with --trial-image (--layout for others)",
    "--images": ".npy images [N, H, W], [N, C, H, W], [N, H, W, C] or flattened [N, P] with --image-shape",
    "--trial-image": ".npy [T] image index of each trial ([T, K] responses)",
    "--tiers": ".npy (strings) or .txt (one a line) tier of each trial [T] or image [N]: train/validation/test/final_test",
    "--test-arrays": "a separate test set (.npz / .mat); all its trials are 'test'",
    "--test-responses": "a separate test set's .npy responses (with --test-images); all its trials are 'test'",
    "--test-images": ".npy images of the separate test set",
    "--test-trial-image": ".npy [T] image index of each trial of the separate test set",
}
#: required metadata of local files (no defaults) -> help
LOCAL_META = {
    "--species": "species recorded, e.g. macaque, mouse (required)",
    "--area": "visual area, e.g. V1, V4, IT (required)",
    "--unit": f"response unit, one of {list(RESPONSE_UNITS)} or an alias (required)",
    "--pixels-per-degree": "image pixels per degree of visual angle as shown (required)",
}
LOCAL_EXAMPLE = (
    "neuroreg data convert --responses R.npy --images I.npy --species macaque --area V4 --unit spikes "
    "--pixels-per-degree 30 --split validation=0.1,test=0.2 --split-seed 0 --out rec.h5"
)


def _list(manifests: dict[str, Manifest]) -> int:
    width = max((len(n) for n in manifests), default=4)
    for m in manifests.values():
        nc = " [non-commercial]" if m.non_commercial else ""
        sure = {"confirmed": " (confirmed)", "unconfirmed": " (sha256 unconfirmed)"}.get(m.checksum_status, f" ({m.checksum_status})")
        print(f"{m.name:<{width}}  {m.kind:<6}  {m.species:<7}  {m.area:<10}  {m.title}{nc}{sure}")
    return 0


def _info(m: Manifest, data_dir) -> int:
    print(f"name:      {m.name}\ntitle:     {m.title}\nkind:      {m.kind}\nspecies:   {m.species}\narea:      {m.area}")
    print(f"modality:  {m.modality}\nsplit:     {m.split.strip()}")
    if m.reader_function:
        print(f"reader:    {m.reader_function} {m.reader_options or ''}")
    print(license_notice(m))
    print("files:")
    for f in m.files:
        size = f"{f.size} bytes" if f.size else "size unknown"
        sha = f.sha256 or "UNCONFIRMED" + (f" (published md5 {f.md5})" if f.md5 else "") + (f" (published sha1 {f.sha1})" if f.sha1 else "")
        here = "fetched" if local_path(m, f, data_dir).is_file() else "not fetched"
        print(f"  {f.name}  [{f.format}, {size}, {here}{', optional' if f.optional else ''}]\n    url:    {f.url}\n    sha256: {sha}")
        if f.git_blob:
            print(f"    git blob id: {f.git_blob}")
        if f.note:
            print(f"    note:   {f.note}")
    print(f"data dir:  {resolve_data_dir(data_dir) / m.name}")
    return 0


def _print_verifications(results) -> int:
    bad = 0
    for v in results:
        if v.status == "missing" and v.file.optional:
            print(f"SKIPPED   {v.path} (optional, not fetched)")
        elif v.status == "missing":
            bad += 1
            print(f"MISSING   {v.path}")
        else:
            tag = "OK" if v.status == "ok" else "RECORDED"
            print(f"{tag:<9} {v.path}  sha256 {v.sha256}" + (f" (checked against {v.checked_against})" if v.checked_against else ""))
    return 1 if bad else 0


def _parse_options(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option: expected KEY=VALUE, found {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def convert(m: Manifest, out, data_dir=None, *, trust_pickle: bool = False, options: dict | None = None):
    """Verify the local files of ``m``, read them with its reader and save a NeuralRecording.

    Returns:
        The saved :class:`~neuroreg.data.recording.NeuralRecording`.

    Raises:
        FileNotFoundError: a file has not been fetched.
        ChecksumError: a file does not match (moved aside, never read).
    """
    reader = m.reader()  # an image set has none: say so before looking at files
    results = verify(m, data_dir)
    missing = [str(v.path) for v in results if v.status == "missing" and not v.file.optional]
    if missing:
        raise FileNotFoundError(f"{m.name}: not fetched yet: {', '.join(missing)}; run `neuroreg data fetch {m.name}`")
    kwargs = {**m.reader_options, **(options or {})}
    kwargs.update({v.file.role: v.path for v in results if v.status != "missing"})
    params = inspect.signature(reader).parameters
    if "trust_pickle" in params:
        kwargs["trust_pickle"] = trust_pickle
        pickles = [v for v in results if v.file.format in ("pickle", "zip") and v.file.role in params]
        if "sha256" in params and pickles:
            # only a manifest-confirmed checksum authorises unpickling without --trust-pickle
            kwargs["sha256"] = pickles[0].file.sha256
    for name in ("species", "area"):  # what the manifest says was recorded, for a reader that does not know it
        if name in params and params[name].default is params[name].empty and name not in kwargs:
            kwargs[name] = getattr(m, name)
    unknown = sorted(set(kwargs) - set(params))
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        raise ManifestError(f"{m.path}: field 'reader.options': {m.reader_function} has no arguments {unknown}")
    needed = [n for n, p in params.items() if p.default is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n not in kwargs]
    if needed:
        raise ManifestError(f"{m.path}: field 'reader.options': {m.reader_function} needs {needed} (or --option KEY=VALUE)")
    recording = reader(**kwargs)
    # a NeuralRecording, or another type with .save(path) (e.g. an RDM): stamp the fields it has
    stamp = {"source": f"{m.name}:{getattr(recording, 'source', '')}", "citation": m.citation.strip(), "license": m.license_id}
    if dataclasses.is_dataclass(recording):
        names = {f.name for f in dataclasses.fields(recording)}
        recording = dataclasses.replace(recording, **{k: v for k, v in stamp.items() if k in names})
    recording.save(out)
    return recording


def _local_given(args) -> list[str]:
    """The local-file options given on the command line (as flags)."""
    flags = [*LOCAL_FILES, "--layout", "--test-layout", "--image-shape", "--split", "--split-seed", *LOCAL_META, "--standardize",
             "--source", "--citation", "--license"]
    given = [f for f in flags if getattr(args, f[2:].replace("-", "_")) is not None]
    return given + (["--key"] if args.key else [])


def _image_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) not in (2, 3):
        raise ValueError(f"--image-shape: expected C,H,W or H,W (e.g. 3,32,32 or 32,32), found {text!r}")
    return shape


def convert_local(args) -> NeuralRecording:
    """``neuroreg data convert --arrays/--responses ...``: local files to a NeuralRecording saved at ``args.out``.

    Raises:
        ValueError: missing or contradictory options (the message says what to pass).
    """
    from .readers.arrays import SPLIT_HINT, parse_split, read_arrays

    if args.option or args.trust_pickle or args.fetch:
        raise ValueError("--option, --trust-pickle and --fetch are for a manifest's data set (convert NAME); "
                         "local files take the options of `neuroreg data convert --help` under 'local files'")
    if (args.arrays is None) == (args.responses is None):
        raise ValueError(f"expected a data set NAME, or local files: --arrays FILE.npz, or --responses R.npy --images I.npy "
                         f"(one of the two); found {'both' if args.arrays else 'neither'}. Example: {LOCAL_EXAMPLE}")
    if args.test_arrays is not None and args.test_responses is not None:
        raise ValueError("--test-arrays, --test-responses: expected one of the two, found both")
    missing = [f for f in LOCAL_META if getattr(args, f[2:].replace("-", "_")) is None]
    if missing:
        raise ValueError(
            f"local files: missing {', '.join(missing)}: nothing is assumed about what was recorded; e.g. --species macaque "
            f"--area V4 --unit spikes --pixels-per-degree 30 (units: {list(RESPONSE_UNITS)} or an alias: "
            f"{', '.join(RESPONSE_UNIT_ALIASES)})"
        )
    response_unit(args.unit, "--unit")
    try:
        ppd = float(args.pixels_per_degree)
    except ValueError:
        raise ValueError(f"--pixels-per-degree: expected a positive number, found {args.pixels_per_degree!r}") from None
    if args.split_seed is not None and args.split is None:
        raise ValueError(f"--split-seed: given without --split; a split needs its fractions: {SPLIT_HINT}")
    keys = {}
    for item in args.key:
        ours, sep, theirs = item.partition("=")
        if not sep or not ours or not theirs:
            raise ValueError(f"--key: expected OURS=THEIRS (e.g. images=stim), found {item!r}")
        keys[ours] = theirs
    return read_arrays(
        args.arrays or args.responses,
        images=args.images,
        trial_image=args.trial_image,
        tiers=args.tiers,
        test_path=args.test_arrays or args.test_responses,
        test_images=args.test_images,
        test_trial_image=args.test_trial_image,
        layout=args.layout or "auto",
        test_layout=args.test_layout or "auto",
        keys=keys,
        image_shape=_image_shape(args.image_shape),
        split=None if args.split is None else parse_split(args.split, "--split"),
        split_seed=0 if args.split_seed is None else args.split_seed,
        standardize=bool(args.standardize),
        species=args.species,
        area=args.area,
        response_unit=args.unit,
        pixels_per_degree=ppd,
        source=args.source or "",
    )


def _report(out, rec: NeuralRecording) -> None:
    """Print what was written, the tiers per image and trial, and every choice recorded in the file."""
    print(f"wrote {out}: {rec.n_images} images, {rec.n_trials} trials, {rec.n_neurons} neurons, tiers {rec.tiers}")
    print(f"  species {rec.species}, area {rec.area}, unit {rec.response_unit}, {rec.pixels_per_degree:g} pixels/degree")
    for tier in rec.tiers:
        trials = rec.trial_tier == tier
        print(f"  {tier:<10} {len(np.unique(rec.trial_image[trials])):>6} images {int(trials.sum()):>8} trials")
    print(f"  recorded in the file's 'source' attribute: {rec.source}")
    if "validation" not in rec.tiers or "train" not in rec.tiers:
        print("  note: a twin (NeuralDataModule) needs train and validation tiers: give them, or --split validation=0.1")


def main(argv: list[str]) -> int:
    """Run ``neuroreg data ...``; returns the exit status (non-zero with a message on errors)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return _list(load_manifests(args.manifests))
        if args.command == "convert" and args.name is None:
            rec = dataclasses.replace(convert_local(args), citation=args.citation or "", license=args.license or "")
            rec.save(args.out)
            _report(args.out, rec)
            return 0
        if args.command == "convert" and _local_given(args):
            raise ValueError(f"{', '.join(_local_given(args))}: options for local files, not for a manifest's data set "
                             f"({args.name!r}); drop NAME to convert local files")
        m = find_manifest(args.name, args.manifests)
        if args.command == "info":
            return _info(m, args.data_dir)
        if args.command == "fetch":
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                results = fetch(m, args.data_dir, progressbar=not args.no_progress, mirror=args.mirror)
            return _print_verifications(results)
        if args.command == "verify":
            return _print_verifications(verify(m, args.data_dir))
        if args.command == "convert":
            if args.fetch:
                fetch(m, args.data_dir, progressbar=True, mirror=args.mirror)
            rec = convert(m, args.out, args.data_dir, trust_pickle=args.trust_pickle, options=_parse_options(args.option))
            from .recording import NeuralRecording

            if isinstance(rec, NeuralRecording):
                print(f"wrote {args.out}: {rec.n_images} images, {rec.n_trials} trials, {rec.n_neurons} neurons, tiers {rec.tiers}")
            else:
                print(f"wrote {args.out}: {type(rec).__name__}")
            return 0
    except (KeyError, OSError, ManifestError, ChecksumError, FetchError, ValueError, ImportError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"neuroreg data {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 2
