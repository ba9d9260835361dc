"""Dataset readers: VOC roots, COCO instances JSONs and plain image folders behind one interface.

``open_dataset(path)`` picks the reader; see ``liid.datasets.base`` for the interface.
"""

from liid.datasets.base import IGNORE, Dataset, ImageInfo, Instances, read_rgb
from liid.datasets.coco import CocoDataset
from liid.datasets.folder import ImageFolderDataset
from liid.datasets.registry import open_dataset, register_dataset, registered_datasets, unregister_dataset
from liid.datasets.voc import VOC_CLASSES, VocDataset

__all__ = [
    "IGNORE", "VOC_CLASSES", "CocoDataset", "Dataset", "ImageFolderDataset", "ImageInfo", "Instances",
    "VocDataset", "open_dataset", "read_rgb", "register_dataset", "registered_datasets", "unregister_dataset",
]
