"""PASCAL VOC 2012 layout: image list, XML image labels, SegmentationObject/SegmentationClass ground truth.

The root holds ``JPEGImages/<id>.jpg``, ``Annotations/<id>.xml``, ``ImageSets/Segmentation/<split>.txt``
and, for images with ground truth, ``SegmentationObject/<id>.png`` (pixel = instance number 1..n, 0
background, 255 void) and ``SegmentationClass/<id>.png`` (pixel = class index, 255 void). Image labels
come from the XML objects (difficult ones included). The XMLs are parsed once, at open, so a bad
annotation is reported before any work starts.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liid.datasets.base import IGNORE, Dataset, ImageInfo, Instances, contained, decoded, image_size, listing
from liid.datasets.folder import IMAGE_EXTS
from liid.errors import LiidError

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]


@dataclass(frozen=True)
class _Annotation:
    """What one XML gives: the recorded size (0 when absent) and the object classes in XML order."""

    height: int
    width: int
    objects: tuple[int, ...]


def read_classes(file: Path) -> list[str]:
    """A ``classes.txt``: one name per line, ``background`` first, no duplicates."""
    try:
        names = [line.strip() for line in file.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise LiidError(f"{file}: unreadable class list ({e})") from None
    if not names or names[0] != "background":
        raise LiidError(f"{file}: the first class must be 'background'")
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise LiidError(f"{file}: class {sorted(dup)[0]!r} is listed twice")
    if len(names) > IGNORE:
        raise LiidError(f"{file}: {len(names)} classes do not fit a palette PNG (at most {IGNORE})")
    return names


def read_id_list(file: Path) -> list[str]:
    """Image ids of a list file, one per line: ``2007_000032`` or ``/JPEGImages/2007_000032.jpg <gt>.png``.

    The id is the first token, or that token's stem when it is a path or an image file name. A token with a
    ``..`` component is a LiidError naming the list: it points outside the folder the id is looked up in
    (``JPEGImages``, or the root for SBD's ``/JPEGImages/...`` paths), and its stem alone would silently
    name another image.
    """
    try:
        lines = file.read_text().splitlines()
    except FileNotFoundError:
        raise LiidError(f"{file}: image list not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LiidError(f"{file}: unreadable image list ({e})") from None
    ids, seen = [], set()
    for line in lines:
        if not line.strip():
            continue
        token = line.split()[0]
        if ".." in token.split("/"):
            raise LiidError(f"{file}: image {token!r} leads outside the dataset's folders")
        if "/" in token or os.path.splitext(token)[1].lower() in IMAGE_EXTS:
            token = Path(token).stem
        if token in seen:
            raise LiidError(f"{file}: image {token!r} is listed twice")
        seen.add(token)
        ids.append(token)
    if not ids:
        raise LiidError(f"{file}: the image list is empty")
    return ids


def _int(node: ET.Element | None, tag: str) -> int:
    text = node.findtext(tag) if node is not None else None
    try:
        return int(float(text)) if text else 0
    except ValueError:
        return 0


def parse_xml(file: Path, class_index: dict[str, int]) -> _Annotation:
    """Size and object classes of one VOC XML; an unknown class name is a LiidError naming file and name."""
    try:
        root = ET.parse(file).getroot()
    except FileNotFoundError:
        raise LiidError(f"{file}: annotation file not found") from None
    except (ET.ParseError, OSError) as e:
        raise LiidError(f"{file}: unreadable annotation XML ({e})") from None
    size = root.find("size")
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in class_index:
            raise LiidError(f"{file}: object class {name!r} is not in the class list")
        objects.append(class_index[name])
    return _Annotation(_int(size, "height"), _int(size, "width"), tuple(objects))


def read_index_png(file: Path, height: int, width: int, num_classes: int | None = None, what: str = "ground truth",
                   image: str = "the image") -> np.ndarray:
    """A palette ("P") or grayscale ("L") PNG as its uint8 indices [H, W]; checked against the image size and,
    given ``num_classes`` K, for values outside 0..K other than 255 (ignore).

    The one reader of label PNGs: VOC ground truth, pseudo-masks, semantic predictions. The indices are
    returned as stored (a palette's colours are ignored); any other mode, or an EXIF orientation, is a
    LiidError naming the file. ``what`` and ``image`` name the file's role and its image in the error messages.
    """
    im = decoded(file, what, orient=False)
    if im.mode not in ("P", "L"):  # never converted: RGB colours, 16-bit or alpha values are not indices
        raise LiidError(f"{file}: {what} must be a palette or 8-bit grayscale PNG of indices, got mode {im.mode}")
    arr = np.asarray(im)
    if arr.shape != (height, width):
        raise LiidError(f"{file}: {what} is {arr.shape[0]}x{arr.shape[1]} (HxW), {image} is {height}x{width}")
    if num_classes is not None:
        bad = (arr > num_classes) & (arr != IGNORE)
        if bad.any():
            raise LiidError(f"{file}: pixel value {int(arr[bad][0])} is not a class index (0..{num_classes}) "
                            f"nor {IGNORE}")
    return arr.astype(np.uint8, copy=False)


class VocDataset(Dataset):
    """A PASCAL VOC 2012 root (the folder holding ``JPEGImages``).

    ``split``: None → ``ImageSets/Segmentation/train.txt`` when it exists, else every ``Annotations/*.xml``;
    a name → ``ImageSets/Segmentation/<name>.txt`` (else ``ImageSets/Main/<name>.txt``); a path (it exists,
    contains a ``/`` or ends in ``.txt``) → that list file, e.g. the 10,582-image SBD ``train_aug.txt``.
    """

    kind = "voc"

    def __init__(self, root: str | os.PathLike, split: str | os.PathLike | None = None) -> None:
        self.source = Path(root)
        if not (self.source / "JPEGImages").is_dir():
            raise LiidError(f"{self.source}: not a VOC root (no JPEGImages folder)")
        classes_txt = self.source / "classes.txt"
        self.classes = read_classes(classes_txt) if classes_txt.is_file() else list(VOC_CLASSES)
        self.split_file, ids = self._image_ids(split)
        self._ann: dict[str, _Annotation] = {}
        self.images = self._read_images(ids)
        self.has_instances = (self.source / "SegmentationObject").is_dir()
        self.has_semantic = (self.source / "SegmentationClass").is_dir()

    def _image_ids(self, split: str | os.PathLike | None) -> tuple[Path | None, list[str]]:
        """The list file (None: all Annotations) and its image ids."""
        sets = self.source / "ImageSets"
        if split is None:
            default = sets / "Segmentation" / "train.txt"
            if default.is_file():
                return default, read_id_list(default)
            ann = self.source / "Annotations"
            ids = sorted(n[:-4] for n in listing(ann).links if n.endswith(".xml"))
            if not ids:
                raise LiidError(f"{ann}: no annotation XMLs (and no {default})")
            return None, ids
        s = os.fspath(split)
        if not isinstance(split, str) or Path(s).is_file() or "/" in s or os.sep in s or s.endswith(".txt"):
            return Path(s), read_id_list(Path(s))
        for file in (sets / "Segmentation" / f"{s}.txt", sets / "Main" / f"{s}.txt"):
            if file.is_file():
                return file, read_id_list(file)
        raise LiidError(f"{sets / 'Segmentation' / (s + '.txt')}: split {s!r} not found "
                        f"(nor in ImageSets/Main)")

    def _read_images(self, ids: list[str]) -> list[ImageInfo]:
        """ImageInfo per id, checking that its XML and image file exist, that they and its ground-truth PNGs
        lie inside their folders (``contained``), and parsing the XML."""
        ann_dir = self.source / "Annotations"
        xmls, imgs = listing(ann_dir), listing(self.source / "JPEGImages")
        gts = [listing(self.source / d) for d in ("SegmentationObject", "SegmentationClass")]
        where = self.split_file if self.split_file is not None else ann_dir
        class_index = {c: k for k, c in enumerate(self.classes) if k > 0}
        out = []
        for pos, i in enumerate(ids):
            xml = contained(xmls, f"{i}.xml", f"{where}: image {i!r}")
            if xml.name not in xmls:
                raise LiidError(f"{xml}: annotation file not found (image {i!r})")
            name = f"{i}.png" if f"{i}.jpg" not in imgs and f"{i}.png" in imgs else f"{i}.jpg"
            file = contained(imgs, name, f"{where}: image {i!r}")
            if file.name not in imgs:
                raise LiidError(f"{file}: image file not found (image {i!r})")
            for gt in gts:
                if f"{i}.png" in gt:
                    contained(gt, f"{i}.png", f"{where}: image {i!r}")
            ann = parse_xml(xml, class_index)
            h, w = (ann.height, ann.width) if ann.height > 0 and ann.width > 0 else image_size(file)
            self._ann[i] = ann
            out.append(ImageInfo(i, file, h, w, coco_id=pos + 1))
        return out

    def labels(self, image_id: str) -> np.ndarray:
        self.info(image_id)
        return np.unique(np.asarray(self._ann[image_id].objects, dtype=np.int64))

    def semantic(self, image_id: str) -> np.ndarray | None:
        im = self.info(image_id)
        file = self.source / "SegmentationClass" / f"{image_id}.png"
        if not file.is_file():
            return None
        sem = read_index_png(file, im.height, im.width)
        bad = (sem > self.num_classes) & (sem != IGNORE)
        if bad.any():
            raise LiidError(f"{file}: pixel value {int(sem[bad][0])} is not a class index (0..{self.num_classes})"
                            f" nor {IGNORE}")
        return sem

    def instances(self, image_id: str) -> Instances | None:
        """One instance per value 1..254 of SegmentationObject; its class is the majority foreground class
        of SegmentationClass over its pixels (the XML object of that number when the class PNG is absent)."""
        im = self.info(image_id)
        file = self.source / "SegmentationObject" / f"{image_id}.png"
        if not file.is_file():
            return None
        obj = read_index_png(file, im.height, im.width)
        sem = self.semantic(image_id)
        values = [int(v) for v in np.unique(obj) if 0 < v < IGNORE]
        masks = np.zeros((len(values), im.height, im.width), dtype=bool)
        classes = np.zeros(len(values), dtype=np.int64)
        for n, v in enumerate(values):
            masks[n] = obj == v
            classes[n] = self._instance_class(image_id, file, v, sem[masks[n]] if sem is not None else None)
        return Instances(masks, classes, np.zeros(len(values), dtype=bool))

    def _instance_class(self, image_id: str, file: Path, value: int, pixels: np.ndarray | None) -> int:
        """Majority class 1..K of an instance's pixels; falls back to XML object ``value`` (1-based)."""
        if pixels is not None:
            counts = np.bincount(pixels, minlength=IGNORE + 1)[1:self.num_classes + 1]
            if counts.any():
                return int(np.argmax(counts)) + 1
        objects = self._ann[image_id].objects
        if value <= len(objects):
            return objects[value - 1]
        raise LiidError(f"{file}: instance {value} has no class (no class pixels, and the XML has "
                        f"{len(objects)} objects)")

    def describe(self) -> dict:
        d = super().describe()
        d["split"] = str(self.split_file) if self.split_file is not None else None
        return d
