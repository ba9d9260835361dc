"""Throughput of the MIL network's forward pass, as `liid extract` runs it (eval mode, no gradient).

    python tools/bench_extract.py [--backbone resnet50] [--size 448] [--proposals 20] [--batch 4] [--iters 5]

Random weights and random images: speed does not depend on their values. Prints images/s and
proposals/s; the image decoding and resizing of `liid extract` come on top (a few ms per image).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from liid.models import MILNetwork, build_backbone, pick_device


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="resnet50", choices=["resnet50", "resnet18"])
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--proposals", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--device", default=None)
    a = ap.parse_args(argv)
    device = pick_device(a.device)
    torch.manual_seed(0)
    trunk, channels = build_backbone(a.backbone, from_scratch=True, freeze_bn=True)
    model = MILNetwork(trunk, channels, a.classes).to(device).eval()
    x = torch.randn(a.batch, 3, a.size, a.size, device=device)
    xy = torch.rand(a.batch, a.proposals, 2, device=device) * a.size * 0.6
    wh = torch.rand(a.batch, a.proposals, 2, device=device) * a.size * 0.4 + 8
    boxes = [torch.cat([xy[b], xy[b] + wh[b]], dim=1) for b in range(a.batch)]
    model.extract(x, boxes)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.iters):
        model.extract(x, boxes)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    images = a.iters * a.batch
    print(json.dumps({"backbone": a.backbone, "size": a.size, "batch": a.batch, "device": str(device),
                      "threads": torch.get_num_threads(), "images_per_second": images / seconds,
                      "proposals_per_second": images * a.proposals / seconds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
