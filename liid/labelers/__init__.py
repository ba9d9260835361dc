"""Labelers: methods that turn a dataset's proposals / images into pseudo-labels in the export format
(COCO instances JSON + VOC-palette PNGs), selected by ``liid label --method NAME``.

LIID itself is the staged pipeline (extract → build-graph → solve-cut → export); the labelers here are
its ablations and the alternative methods of the papers. Each method is one ``Labeler`` of the registry
(``liid.labelers.registry``: ``register_labeler``, ``get_labeler``, ``LABELERS``); the built-in ones are
registered in ``liid.labelers.builtin``.
"""

from liid.labelers.cam import cam_instances, cam_semantic
from liid.labelers.mil_argmax import mil_argmax_labels
from liid.labelers.oracle import oracle_labels
from liid.labelers.registry import LABELERS, Labeler, NameView, get_labeler, register_labeler

METHODS = NameView()  # the registered labelers' names, read live (a plugin's method is in it too)

__all__ = ["LABELERS", "METHODS", "Labeler", "cam_instances", "cam_semantic", "get_labeler", "mil_argmax_labels",
           "oracle_labels", "register_labeler"]
