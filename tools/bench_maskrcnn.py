"""Mask R-CNN training speed on CPU: seconds per iteration by backbone and RoIs per image.

    python tools/bench_maskrcnn.py DATASET PSEUDO.json [--backbone resnet18] [--roi-batch 512 128 64 32]
                                   [--batch-size 4] [--size 160] [--iterations 5]

One training iteration of ``liid train-maskrcnn``'s model (torchvision Mask R-CNN, FPN, frozen-BN
structure) on the first ``--batch-size`` images of DATASET with the pseudo instances PSEUDO.json (e.g. the
``labels_liid/instances.json`` of ``make demo``), after one warm-up iteration; random init. The speed does
not depend on the weights as long as the losses stay finite; a random resnet50 under frozen BatchNorm
gives NaN at once, and its rows (marked) then time a degenerate pass, so only backbones whose losses stay
finite give figures worth quoting. Prints a table and, last, one JSON line.

Why ``make demo`` uses 32 RoIs per image: the mask head runs four 256-channel convolutions on every
positive RoI, so its cost grows with them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

from liid.datasets import open_dataset
from liid.detection.maskrcnn import MaskRCNNData, build_maskrcnn, collate, read_pseudo_labels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("pseudo")
    ap.add_argument("--backbone", nargs="+", default=["resnet18"])
    ap.add_argument("--roi-batch", type=int, nargs="+", default=[512, 128, 64, 32])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--iterations", type=int, default=5)
    a = ap.parse_args(argv)
    ds = open_dataset(a.dataset)
    data = MaskRCNNData(ds, read_pseudo_labels(ds, a.pseudo), train=True, seed=0)
    xs, targets, _ = collate([data[i] for i in range(min(a.batch_size, len(data)))])
    rows = []
    print(f"{'backbone':10} {'RoIs/img':>8} {'s/iter':>8}  (batch {len(xs)}, {a.size} px, {torch.get_num_threads()} "
          f"threads)")
    for backbone in a.backbone:
        for roi in a.roi_batch:
            torch.manual_seed(0)
            model = build_maskrcnn(ds.num_classes, a.size, a.size, pretrained=True, backbone=backbone, roi_batch=roi)
            model.train()
            opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.005, momentum=0.9)
            times, finite = [], True
            for i in range(a.iterations + 1):
                t0 = time.perf_counter()
                loss = sum(model(list(xs), list(targets)).values())
                opt.zero_grad()
                loss.backward()
                opt.step()
                finite &= math.isfinite(loss.item())
                if i:
                    times.append(time.perf_counter() - t0)
            s = sum(times) / len(times)
            rows.append({"backbone": backbone, "roi_batch": roi, "seconds_per_iteration": s, "finite_loss": finite})
            print(f"{backbone:10} {roi:8d} {s:8.2f}" + ("" if finite else "  (NaN loss)"), flush=True)
    print(json.dumps({"batch_size": len(xs), "size": a.size, "threads": torch.get_num_threads(), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
