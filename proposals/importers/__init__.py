"""Importers of third-party segment proposals into ``proposals.store.ImageProposals``.

Pure functions: a file (plus the image's height and width) in, ``ImageProposals`` out; the CLI (``liid
proposals``) writes the store. Every error is a one-line ``LiidError`` naming the file and, where it
applies, the proposal (0-based, the store's index) or the results entry.
"""

from __future__ import annotations

import os

from liid.errors import LiidError
from liid.proposals.importers.coco import read_coco_results
from liid.proposals.importers.mcg import read_mcg_boxes, read_mcg_mat
from liid.proposals.importers.prm import read_prm_json
from liid.proposals.store import ImageProposals

FORMATS: dict[str, str] = {
    "mcg-mat": "MCG .mat per image: superpixels (HxW, 1-based), labels (Nx1 cell of superpixel ids), scores (Nx1)",
    "mcg-boxes": "MCG box .mat per image: boxes Nx4 [y1 x1 y2 x2] 1-based inclusive, optional scores; "
                 "masks are the filled boxes",
    "prm-json": "PRM/MCG run-length JSON per image: [{data: base64 uint32 (1-based C-order start, length) "
                "pairs, shape: [H, W]}]; score 1 - j/N by order",
    "coco-results": "COCO results JSON for all images: [{image_id, segmentation (RLE or polygons), score}]",
}

_READERS = {"mcg-mat": read_mcg_mat, "mcg-boxes": read_mcg_boxes, "prm-json": read_prm_json}
PER_IMAGE_FORMATS: tuple[str, ...] = tuple(_READERS)


def import_image_proposals(path: str | os.PathLike, fmt: str, height: int, width: int,
                           max_proposals: int | None = None) -> ImageProposals:
    """Import one image's proposal file of format ``fmt`` (one of ``PER_IMAGE_FORMATS``), file order kept.

    ``max_proposals`` keeps the first n (the formats are sorted best first).
    """
    reader = _READERS.get(fmt)
    if reader is None:
        if fmt == "coco-results":
            raise LiidError(f"{path}: 'coco-results' holds many images; read it with read_coco_results")
        raise LiidError(f"unknown proposal format {fmt!r} (one of {', '.join(FORMATS)})")
    return reader(path, height, width, max_proposals=max_proposals)


__all__ = [
    "FORMATS",
    "PER_IMAGE_FORMATS",
    "import_image_proposals",
    "read_coco_results",
    "read_mcg_boxes",
    "read_mcg_mat",
    "read_prm_json",
]
