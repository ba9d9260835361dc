"""Labelers: methods that turn a dataset's proposals / images into pseudo-labels in the export format
(COCO instances JSON + VOC-palette PNGs), selected by ``liid label --method NAME``.

LIID itself is the staged pipeline (extract → build-graph → solve-cut → export); the labelers here are
its ablations and the alternative methods of the papers.
"""

from liid.labelers.cam import cam_instances, cam_semantic
from liid.labelers.mil_argmax import mil_argmax_labels
from liid.labelers.oracle import oracle_labels

METHODS = ("mil-argmax", "oracle", "cam", "oaa", "oaa+", "am-saliency", "dsrg", "vit-sm")

__all__ = ["METHODS", "cam_instances", "cam_semantic", "mil_argmax_labels", "oracle_labels"]
