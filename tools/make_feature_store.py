"""Write a generated feature store (liid.synthetic_features) for demos, benchmarks and tests.

    python tools/make_feature_store.py OUT --images 10000 --seed 0
Also writes OUT/truth.npy: the true class of each proposal (0 = background), for measuring accuracy.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from liid.errors import LiidError
from liid.graph.feature_store import write_feature_store
from liid.synthetic_features import SyntheticSpec, make_feature_store


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--proposals-per-image", type=int, default=20)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    spec = SyntheticSpec(images=a.images, proposals_per_image=a.proposals_per_image, classes=a.classes,
                         dim=a.dim, seed=a.seed)
    try:
        store, truth = make_feature_store(spec)
        write_feature_store(a.out, store, overwrite=a.overwrite)
    except LiidError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    np.save(f"{a.out}/truth.npy", truth.astype(np.int16))
    print(f"wrote {a.out}: {store.num_proposals:,} proposals, {a.images:,} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
