"""Write a generated feature store (liid.synthetic_features) for demos, benchmarks and tests.

    python tools/make_feature_store.py OUT --images 10000 --seed 0
    python tools/make_feature_store.py OUT --preset coco --dim 2048     # 5e6 proposals, 80 classes, on disk

Also writes OUT/truth.npy: the true class of each proposal (0 = background), for measuring accuracy. The
features go straight into OUT's features.npy (a memory map, float16), chunk by chunk: a COCO-scale store
(5e6 x 2048, 20 GB) never sits in memory.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from liid.atomic import atomic_dir, write_json
from liid.errors import LiidError
from liid.graph.feature_store import ARRAYS, store_record
from liid.synthetic_features import SyntheticSpec, coco_spec, make_feature_store


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--preset", choices=["voc", "coco"], default="voc",
                    help="voc: --images x --proposals-per-image, --classes; coco: 125,000 images x 40, 80 classes, "
                         "2.95 labels per image (--images still sets the number of images)")
    ap.add_argument("--images", type=int, default=None, help="default: 10,000 (voc), 125,000 (coco)")
    ap.add_argument("--proposals-per-image", type=int, default=20)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    if a.preset == "coco":
        spec = coco_spec(dim=a.dim, images=a.images or 125_000, seed=a.seed)
    else:
        spec = SyntheticSpec(images=a.images or 10_000, proposals_per_image=a.proposals_per_image,
                             classes=a.classes, dim=a.dim, seed=a.seed)
    t0 = time.perf_counter()
    n = spec.images * spec.proposals_per_image
    try:
        with atomic_dir(a.out, overwrite=a.overwrite) as tmp:
            feats = np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=np.float16, shape=(n, spec.dim))
            store, truth = make_feature_store(spec, features_out=feats)
            feats.flush()
            del feats
            for name in ARRAYS:
                if name != "features":
                    np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(store, name)))
            write_json(tmp / "store.json", store_record(store, {"synthetic": {**spec.__dict__}}))
            np.save(tmp / "truth.npy", truth.astype(np.int16))
    except LiidError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.out}: {n:,} proposals x {spec.dim}, {spec.images:,} images, {spec.classes} classes in "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
