"""Every labeler on one dataset, scored alike (liid.pipeline.compare): the comparison table of BENCHMARKS.md.

    python tools/bench_labelers.py --out bench_labelers/synthetic
    python tools/bench_labelers.py --dataset ../shared/data/coco-mini/annotations/instances_train2017.json \\
        --out bench_labelers/coco-mini

Runs the `liid` commands in order (each skipping what is up to date, so an interrupted run continues), then
prints the markdown table (mIoU of the pseudo-masks on the training images, instance AP50/AP75 where the
method defines instances, seconds per image) and writes OUT/results.json and OUT/table.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from liid.errors import LiidError
from liid.pipeline.compare import CompareConfig, markdown_table, run_comparison


def main(argv: list[str] | None = None) -> int:
    d = CompareConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="work folder (stages are cached there)")
    ap.add_argument("--dataset", default=d.dataset, help="'synthetic' (made in OUT) or a VOC root / COCO JSON")
    ap.add_argument("--split", default=d.split, help="VOC roots: the image set")
    ap.add_argument("--images", type=int, default=d.images, help="synthetic images to make (80%% train)")
    ap.add_argument("--top", type=int, default=d.top, help="proposals kept per image")
    ap.add_argument("--workers", type=int, default=d.workers)
    ap.add_argument("--backbone", default=d.backbone, help="the trunk of every CNN (classifier, MIL, DSRG)")
    ap.add_argument("--from-scratch", action="store_true", help="random init instead of the ImageNet weights")
    ap.add_argument("--cls-epochs", type=int, default=d.cls_epochs)
    ap.add_argument("--cls-size", type=int, default=d.cls_size, help="input size of the classifiers (CAM, OAA+)")
    ap.add_argument("--size", type=int, default=d.size, help="DSRG crop and ViT input size")
    ap.add_argument("--mil-epochs", type=int, default=d.mil_epochs)
    ap.add_argument("--integral-epochs", type=int, default=d.integral_epochs, help="OAA+ integral model epochs")
    ap.add_argument("--dsrg-epochs", type=int, default=d.dsrg_epochs)
    ap.add_argument("--dsrg-retrain-epochs", type=int, default=d.dsrg_retrain_epochs,
                    help="epochs of DSRG's retraining round (the 'dsrg + retrain' row)")
    ap.add_argument("--vit-epochs", type=int, default=d.vit_epochs)
    ap.add_argument("--device", default=d.device)
    a = ap.parse_args(argv)
    config = CompareConfig(dataset=a.dataset, images=a.images, split=a.split, top=a.top, workers=a.workers,
                           backbone=a.backbone, from_scratch=a.from_scratch, cls_epochs=a.cls_epochs,
                           cls_size=a.cls_size, size=a.size, mil_epochs=a.mil_epochs,
                           integral_epochs=a.integral_epochs, dsrg_epochs=a.dsrg_epochs,
                           dsrg_retrain_epochs=a.dsrg_retrain_epochs, vit_epochs=a.vit_epochs, device=a.device)
    try:
        results = run_comparison(config, a.out)
    except LiidError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\n{results['images']} images of {config.dataset}\n")
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
