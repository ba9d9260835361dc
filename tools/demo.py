"""`make demo`: ``liid run --config-file configs/synthetic_demo.yaml`` (liid/configs/synthetic_demo.yaml).

    python tools/demo.py [--out demo_out] [KEY VALUE ...]     e.g. MIL.EPOCHS 10 MIL.SIZE 448

The whole pipeline on the embedded synthetic dataset, as the commands a user types, each skipping what is
up to date (an interrupted demo continues where it stopped): make-synthetic → proposals → filter-proposals →
train-cls → train-mil → extract → build-graph → solve-cut → export → label mil-argmax / oracle → evaluate →
train-maskrcnn (evaluated on the val split) → OUT/report.html and OUT/metrics.json. Nothing is special-cased:
this script only names the config; every option of `liid run` is accepted.
"""

from __future__ import annotations

import sys

from liid.cli import main as cli


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return cli.main(["run", "--config-file", "configs/synthetic_demo.yaml", *args], prog_name="liid",
                    standalone_mode=True) or 0


if __name__ == "__main__":
    sys.exit(main())
