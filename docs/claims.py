"""Copy a reproduction report's claims into docs/ and the README's claims block.

    python docs/claims.py runs/repro/quickstart-mini/report            # quickstart
    python docs/claims.py REPORT_DIR --name li2019 --readme README.md

Reads ``REPORT_DIR/summary.json``, writes its ``claims`` to ``docs/<name>_claims.json``
and replaces the content of the README's ``<!-- claims:<name> -->`` … ``<!-- /claims -->``
block with :func:`neuroreg.repro.report.claims_paragraph` of them (the same text as
``REPORT_DIR/claims.md``). tests/repro/test_claims.py checks that the README's block is
the rendering of the committed JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from neuroreg.io import atomic_write
from neuroreg.repro.report import claims_paragraph, with_claims_block

DOCS = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", type=Path, help="a repro report folder (holds summary.json)")
    p.add_argument("--name", default="quickstart", help="claims block and JSON name (default quickstart)")
    p.add_argument("--readme", type=Path, default=DOCS.parent / "README.md")
    args = p.parse_args(argv)
    summary_path = args.report / "summary.json"
    summary = json.loads(summary_path.read_text())
    if "claims" not in summary:
        raise SystemExit(f"{summary_path}: field 'claims': expected the claims of a repro report, found none (an older report?)")
    claims = summary["claims"]
    text = json.dumps(claims, indent=2) + "\n"
    atomic_write(DOCS / f"{args.name}_claims.json", lambda f: f.write(text))
    readme = with_claims_block(args.readme.read_text(), args.name, claims_paragraph(claims))
    atomic_write(args.readme, lambda f: f.write(readme))
    print(f"wrote {DOCS / f'{args.name}_claims.json'} and the '{args.name}' claims block of {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
