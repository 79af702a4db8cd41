"""Write ``data_manifests/cowley2023-v4-<session>.yaml`` for every session of the source.

Reads, from a folder laid out like the project's copy of the data (see its README):

- ``<folder>/FILES_IN_SOURCE_REPO.tsv``: every file of the source folder at the pinned
  commit, with its git blob id and its size (``absent`` where unknown);
- ``<folder>/../SHA256SUMS``: sha256 of the files copied byte-exact (``./<folder name>/<path>``);
- ``<folder>/data_V4_responses/readme.txt``: the authors' session table (animal, role,
  neurons, images), quoted in each manifest's title and note.

A session gets a manifest when the source has its image zip (a recording needs its
stimuli); the sessions whose images the source lacks are listed on stdout and skipped.
Every file carries its git blob id; a file copied here also carries its sha256
(``sha256_status: confirmed``), and the copy's blob id is checked against the listing
before that sha256 is trusted. Run from the repository root::

    python data_manifests/tools/make_cowley2023_manifests.py ../shared/data/cowley2023_v4
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

REPO = "cowleygroup/V4_compact_models"
COMMIT = "f4552ad9d34a466ebc66658f72a08a8e5038f1cf"
FOLDER = "data_V4_responses"
ROLES = (  # role, sub-folder, local name, format, optional
    ("images", "images/images_{s}.zip", "images_{s}.zip", "zip", False),
    ("responses", "responses_repeat_averaged/responses_{s}.npy", "responses_{s}.npy", "npy", False),
    ("raw_responses", "responses_raw/responses_{s}.npy", "responses_raw_{s}.npy", "npy", True),
)
#: images of a session that repeat, byte for byte or nearly, images of the same or another session
DUPLICATES = {
    "190925": "images 901-1200 are byte-identical to images 1-300",
    "210305": "238 near-duplicate image pairs, mostly 50 apart in index",
    "210621": "2 exact duplicate images",
    "210322": "images 601-1200 are byte-identical to images 1-600 of session 210325",
    "210325": "images 1-600 are byte-identical to images 601-1200 of session 210322",
}
CITATION = (
    "Cowley, B. R., Stan, P. L., Pillow, J. W. & Smith, M. A. (2023). Compact deep neural network "
    "models of visual cortex. bioRxiv 2023.11.22.568315; published as Compact deep neural network models "
    "of the visual cortex, Nature (2026), doi:10.1038/s41586-026-10150-1. Data: "
    f"github.com/cowleygroup/V4_compact_models, commit {COMMIT}, folder {FOLDER}/."
)
#: the reader needs it and the source's files do not state it, nor was the stimulus size in
#: degrees found here: 20 px/deg (112 px = 5.6 deg) is an assumption, to be replaced by the
#: paper's value (``--option pixels_per_degree=...`` overrides it in the meantime)
PIXELS_PER_DEGREE = 20.0


def git_blob(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def read_listing(folder: Path) -> dict[str, tuple[str, int | None]]:
    """``{path: (git blob id, size or None)}`` from FILES_IN_SOURCE_REPO.tsv."""
    tsv = folder / "FILES_IN_SOURCE_REPO.tsv"
    lines = tsv.read_text().splitlines()
    if lines[0].split("\t") != ["git_blob_sha1", "size_bytes_or_absent", "path"]:
        sys.exit(f"{tsv}: line 1: expected the header git_blob_sha1, size_bytes_or_absent, path; found {lines[0]!r}")
    out = {}
    for i, line in enumerate(lines[1:], start=2):
        blob, size, path = line.split("\t")
        if not re.fullmatch(r"[0-9a-f]{40}", blob) or not (size == "absent" or size.isdigit()):
            sys.exit(f"{tsv}: line {i}: expected a 40-hex blob id and a size or 'absent', found {line!r}")
        out[path] = (blob, None if size == "absent" else int(size))
    return out


def read_sums(path: Path, prefix: str) -> dict[str, str]:
    """``{path inside the data set folder: sha256}`` for the lines of SHA256SUMS under ``prefix``."""
    out = {}
    for line in path.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        name = name.lstrip("*")
        if name.startswith(prefix):
            out[name[len(prefix):]] = digest
    return out


def read_table(readme: Path) -> dict[str, dict[str, str]]:
    """The authors' session table: ``{session: {animal, role, neurons, repeats, images, types}}``."""
    table = {}
    for line in readme.read_text().splitlines():
        m = re.match(r"^(\d{6})\s+(\w+)\s+(train|test|validation)\s+(\d+)\s+(\d+)\s+(\d+)\s+(.*)$", line.strip())
        if m:
            keys = ("animal", "role", "neurons", "repeats", "images", "types")
            table[m.group(1)] = dict(zip(keys, (g.strip() for g in m.groups()[1:])))
    return table


def q(text: str) -> str:
    """A double-quoted YAML scalar."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def manifest_text(session: str, files: list[dict], info: dict[str, str] | None) -> str:
    role = f"the authors' {info['role']} session" if info else "a session of the source"
    table = (
        f"animal {info['animal']}, {info['neurons']} neurons, {info['images']} images "
        f"({info['types']}), about {info['repeats']} repeats per image" if info else "not in the authors' table"
    )
    dup = DUPLICATES.get(session)
    lines = [
        f"# Cowley et al. 2023 macaque V4, session {session} ({role}; authors' table: {table}).",
        "# Generated by data_manifests/tools/make_cowley2023_manifests.py from the source's file",
        "# listing (git blob ids, sizes) and SHA256SUMS of the files copied byte-exact; do not edit.",
        "# pixels_per_degree is an assumption: the source does not state the images' size in degrees.",
        f"name: cowley2023-v4-{session}",
        f"title: {q(f'Cowley et al. 2023 macaque V4 spike counts to natural images, session {session}')}",
        "kind: neural",
        "species: macaque",
        "area: V4",
        "modality: electrophysiology",
        "files:",
    ]
    for f in files:
        lines += [
            f"  - name: {f['name']}",
            f"    role: {f['role']}",
            f"    url: https://github.com/{REPO}/raw/{COMMIT}/{f['path']}",
            f"    sha256: {f['sha256'] or 'null'}",
            f"    sha256_status: {'confirmed' if f['sha256'] else 'unconfirmed'}",
            f"    git_blob: {f['git_blob']}",
            f"    size: {f['size'] if f['size'] is not None else 'null'}",
            f"    format: {f['format']}",
        ]
        if f["optional"]:
            lines.append("    optional: true")
        lines.append(f"    note: {q(f['note'])}")
    lines += [
        "license:",
        "  id: GPL-3.0",
        "  url: https://www.gnu.org/licenses/gpl-3.0.html",
        "  non_commercial: false",
        "citation: >-",
        *(f"  {chunk}" for chunk in wrap(CITATION)),
        "reader:",
        "  function: neuroreg.data.readers.cowley2023.read_cowley2023",
        "  options:",
        f'    session: "{session}"',
        f"    pixels_per_degree: {PIXELS_PER_DEGREE:g}  # ASSUMED: not stated by the source (see the tool's PIXELS_PER_DEGREE)",
        "    validation_fraction: 0.1",
        "    test_fraction: 0.2",
        "    seed: 0",
        "split: >-",
        *(f"  {chunk}" for chunk in wrap(split_text(session, dup))),
    ]
    return "\n".join(lines) + "\n"


def split_text(session: str, dup: str | None) -> str:
    here = f" In this session {dup}." if dup else ""
    return (
        "None published per image: the authors hold out whole sessions. The reader assigns each image "
        "to train, validation (10 %) or test (20 %) by its content (a hash of its pixels, with near "
        "duplicates grouped), so duplicate images share a tier and an image gets the same tier in every "
        f"session.{here} Pitfall: a split by image index leaks, because images repeat within and across "
        "sessions (190925: 901-1200 = 1-300; 210305: 238 near-duplicate pairs; 210621: 2 exact "
        "duplicates; 210322 images 601-1200 = 210325 images 1-600)."
    )


def wrap(text: str, width: int = 92) -> list[str]:
    out, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return out + [line] if line else out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="the data set folder holding FILES_IN_SOURCE_REPO.tsv")
    p.add_argument("--sums", type=Path, default=None, help="SHA256SUMS (default: <folder>/../SHA256SUMS)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1], help="manifest folder")
    args = p.parse_args(argv)
    folder = args.folder
    listing = read_listing(folder)
    sums = read_sums(args.sums or folder.parent / "SHA256SUMS", f"./{folder.resolve().name}/")
    table = read_table(folder / FOLDER / "readme.txt") if (folder / FOLDER / "readme.txt").is_file() else {}
    sessions = sorted({m.group(1) for path in listing for m in [re.search(r"_(\d{6})\.(zip|npy)$", path)] if m})
    written, skipped = [], []
    for s in sessions:
        if f"{FOLDER}/images/images_{s}.zip" not in listing:
            skipped.append(s)
            continue
        files = []
        for role, sub, name, fmt, optional in ROLES:
            path = f"{FOLDER}/{sub.format(s=s)}"
            if path not in listing:
                if not optional:
                    sys.exit(f"{folder}: session {s}: the listing has no {path}")
                continue
            blob, size = listing[path]
            sha256 = sums.get(path)
            copy = folder / path
            if sha256 is not None:
                found = git_blob(copy)
                if found != blob:
                    sys.exit(f"{copy}: expected git blob id {blob} (FILES_IN_SOURCE_REPO.tsv), found {found}")
                size = copy.stat().st_size
            note = {
                "images": "JPEG 112x112 RGB image<i>.jpg; image i goes with response index i-1 (look members up by name)",
                "responses": "float64 [neurons, images], spike counts in a 100 ms window averaged over repeats",
                "raw_responses": "float64 [neurons, images, repeats], NaN-padded where an image had fewer repeats",
            }[role]
            files.append({"name": name.format(s=s), "role": role, "path": path, "sha256": sha256, "git_blob": blob,
                          "size": size, "format": fmt, "optional": optional, "note": note})
        target = args.out / f"cowley2023-v4-{s}.yaml"
        target.write_text(manifest_text(s, files, table.get(s)))
        written.append(s)
    print(f"wrote {len(written)} manifests to {args.out}")
    if skipped:
        print(f"skipped {len(skipped)} sessions whose image zip the source lacks: {', '.join(skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
