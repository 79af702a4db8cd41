"""``neuroreg data list | info NAME | fetch NAME | verify NAME | convert NAME --out FILE.h5``.

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
    s = sub.add_parser("convert", help="convert a fetched data set to a NeuralRecording .h5", parents=[common])
    s.add_argument("name")
    s.add_argument("--out", required=True, help="output .h5 file (written atomically)")
    s.add_argument("--trust-pickle", action="store_true", help="unpickle even without a confirmed sha256 (runs code!)")
    s.add_argument("--mirror", default=None, help=mirror_help + ", with --fetch")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="override a reader option (YAML value)")
    s.add_argument("--fetch", action="store_true", help="fetch missing files first")
    return p


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
    unknown = sorted(set(kwargs) - set(params))
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        raise ManifestError(f"{m.path}: field 'reader.options': {m.reader_function} has no arguments {unknown}")
    recording = reader(**kwargs)
    # a NeuralRecording, or another type with .save(path) (e.g. an RDM): stamp the fields it has
    stamp = {"source": f"{m.name}:{getattr(recording, 'source', '')}", "citation": m.citation.strip(), "license": m.license_id}
    if dataclasses.is_dataclass(recording):
        names = {f.name for f in dataclasses.fields(recording)}
        recording = dataclasses.replace(recording, **{k: v for k, v in stamp.items() if k in names})
    recording.save(out)
    return recording


def main(argv: list[str]) -> int:
    """Run ``neuroreg data ...``; returns the exit status (non-zero with a message on errors)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return _list(load_manifests(args.manifests))
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
