"""Write a dataset's ground-truth instances as a COCO instances JSON (RLE masks), e.g. VOC val for detectron2.

    python tools/dataset_to_coco.py VOC_ROOT --split val --out ROOT/voc/annotations/instances_val.json

The detectron2 dataset ``liid_voc_val`` (detection/register.py) reads this file with the images of
``VOC_ROOT/JPEGImages``. Image ids follow ``liid export``'s rule (digit ids as integers, else the position
in the image list), ``file_name`` is the image's file name, categories are the dataset's classes 1..K,
crowd (VOC "difficult"/void) instances keep ``iscrowd: 1``. Images without ground truth are left out
(counted on stdout). The file is written atomically and an existing one is kept unless --overwrite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from liid.atomic import check_output, write_json
from liid.datasets import open_dataset
from liid.detection.evaluate import ground_truth_coco
from liid.detection.export import coco_image_ids
from liid.errors import LiidError


def dataset_to_coco(dataset: str, split: str | None, out: Path, overwrite: bool = False) -> dict:
    """Convert and write; returns counts (images, instances, skipped images)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    check_output(out, overwrite)
    ds = open_dataset(dataset, split=split)
    if not ds.has_instances:
        raise LiidError(f"{ds.source}: this {ds.kind} dataset has no ground-truth instances to convert")
    ids, _ = coco_image_ids([{"id": im.id} for im in ds.images])
    gt, _, skipped = ground_truth_coco(ds, list(zip(ids, ds.images, strict=True)), progress=True)
    gt["info"] = {"description": f"ground truth of {ds.source}" + (f" ({split})" if split else ""),
                  "source": str(ds.source)}
    write_json(out, gt, overwrite=overwrite, compact=True)
    return {"images": len(gt["images"]), "instances": len(gt["annotations"]), "skipped_no_gt": skipped}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help="VOC root, COCO JSON or registered dataset name")
    ap.add_argument("--split", default=None, help="VOC roots: the image set (e.g. val)")
    ap.add_argument("--out", type=Path, required=True, help="COCO JSON to write")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    a = ap.parse_args(argv)
    try:
        n = dataset_to_coco(a.dataset, a.split, a.out, a.overwrite)
    except LiidError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{a.out}: {n['images']} images, {n['instances']} instances"
          + (f" ({n['skipped_no_gt']} images without ground truth left out)" if n["skipped_no_gt"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
