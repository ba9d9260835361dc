"""Dataset readers: VOC roots, COCO JSONs, image folders, ``open_dataset`` — on tiny fixtures written here,
and on the real coco-mini photographs when ``../shared/data/coco-mini`` is present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util

from liid.datasets import (
    IGNORE,
    VOC_CLASSES,
    CocoDataset,
    Dataset,
    ImageFolderDataset,
    VocDataset,
    open_dataset,
    register_dataset,
    unregister_dataset,
)
from liid.datasets.palette import write_palette_png
from liid.errors import LiidError

COCO_MINI = Path(__file__).resolve().parents[1].parent / "shared/data/coco-mini"
CAT, DOG, PERSON, CAR, BICYCLE = (VOC_CLASSES.index(c) for c in ("cat", "dog", "person", "car", "bicycle"))


# ----------------------------------------------------------------------------------------------- fixtures


def write_jpeg(path: Path, height: int, width: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, quality=95)


def write_xml(path: Path, objects: list[str], size: tuple[int, int] | None) -> None:
    """A VOC annotation XML; ``size`` (h, w) or None for no <size> element."""
    size_xml = f"<size><width>{size[1]}</width><height>{size[0]}</height><depth>3</depth></size>" if size else ""
    objs = "".join(f"<object><name>{n}</name><difficult>{int(k == 2)}</difficult></object>"
                   for k, n in enumerate(objects))
    path.write_text(f"<annotation><filename>{path.stem}.jpg</filename>{size_xml}{objs}</annotation>")


# id → (height, width, XML objects); image 3 has no ground-truth PNGs and no <size> in its XML
VOC_IMAGES = {
    "2007_000001": (20, 30, ["cat", "dog"]),
    "2007_000002": (24, 16, ["person", "person", "bicycle"]),
    "2007_000003": (18, 18, ["car"]),
}


def voc_ground_truth() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(SegmentationObject, SegmentationClass) per image with ground truth."""
    obj1 = np.zeros((20, 30), np.uint8)
    obj1[2:10, 3:15] = 1
    obj1[12:18, 18:28] = 2
    obj1[10, :] = IGNORE  # a void boundary line
    cls1 = np.where(obj1 == 1, CAT, np.where(obj1 == 2, DOG, obj1)).astype(np.uint8)
    cls1[12:13, 18:28] = CAT  # a minority of instance 2's pixels: its class stays DOG by majority
    obj2 = np.zeros((24, 16), np.uint8)
    obj2[1:8, 1:6] = 1
    obj2[1:8, 8:14] = 2
    obj2[15:22, 2:12] = 3
    cls2 = np.select([obj2 == 1, obj2 == 2, obj2 == 3], [PERSON, PERSON, BICYCLE], 0).astype(np.uint8)
    cls2[0, :] = IGNORE
    return {"2007_000001": (obj1, cls1), "2007_000002": (obj2, cls2)}


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """A 3-image VOC root: jpgs, XMLs, palette PNGs for 2 images, train.txt (2 ids) and a train_aug list."""
    root = tmp_path / "VOC2012"
    for d in ("JPEGImages", "Annotations", "SegmentationObject", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    for k, (i, (h, w, objects)) in enumerate(VOC_IMAGES.items()):
        write_jpeg(root / "JPEGImages" / f"{i}.jpg", h, w, seed=k)
        write_xml(root / "Annotations" / f"{i}.xml", objects, (h, w) if k < 2 else None)
    for i, (obj, cls) in voc_ground_truth().items():
        write_palette_png(root / "SegmentationObject" / f"{i}.png", obj)
        write_palette_png(root / "SegmentationClass" / f"{i}.png", cls)
    (root / "ImageSets/Segmentation/train.txt").write_text("2007_000001\n2007_000002\n")
    (root / "train_aug.txt").write_text("".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n"
                                                for i in VOC_IMAGES))
    return root


def uncompressed_rle(m: np.ndarray) -> dict:
    """COCO uncompressed RLE: run lengths of the column-major flattening, starting with a run of zeros."""
    flat = m.flatten(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": list(m.shape), "counts": counts}


def coco_masks() -> dict[str, np.ndarray]:
    """The masks of the COCO fixture's RLE annotations (the polygon one is a rectangle, see ``coco_json``)."""
    dog = np.zeros((20, 30), bool)
    dog[5:9, 6:10] = True  # inside the cat rectangle: painted on top of it
    crowd = np.zeros((20, 30), bool)
    crowd[10:16, 15:28] = True  # overlaps the cat rectangle's lower-right part
    person = np.zeros((16, 16), bool)
    person[3:12, 4:9] = True
    return {"dog": dog, "crowd": crowd, "person": person}


def cat_rect() -> np.ndarray:
    """What pycocotools rasterizes the polygon (x 2..20, y 1..13) to: rows 1..12, columns 2..19."""
    m = np.zeros((20, 30), bool)
    m[1:13, 2:20] = True
    return m


@pytest.fixture
def coco_json(tmp_path: Path) -> Path:
    """A COCO JSON (categories out of id order) with polygon, uncompressed RLE, compressed RLE and crowd
    annotations; ``c.jpg`` has none. Layout: root/annotations/instances_val2017.json, root/val2017/*.jpg."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    write_jpeg(root / "val2017/a.jpg", 20, 30)
    write_jpeg(root / "val2017/b.jpg", 16, 16, seed=1)
    write_jpeg(root / "val2017/c.jpg", 8, 12, seed=2)
    m = coco_masks()
    person = mask_util.encode(np.asfortranarray(m["person"].astype(np.uint8)))
    data = {
        "images": [{"id": 11, "file_name": "a.jpg", "height": 20, "width": 30},
                   {"id": 12, "file_name": "b.jpg", "height": 16, "width": 16},
                   {"id": 13, "file_name": "c.jpg", "height": 8, "width": 12}],
        "categories": [{"id": 7, "name": "person"}, {"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 11, "category_id": 3, "iscrowd": 0,
             "segmentation": [[2, 1, 20, 1, 20, 13, 2, 13]]},
            {"id": 2, "image_id": 11, "category_id": 1, "iscrowd": 0, "segmentation": uncompressed_rle(m["dog"])},
            {"id": 3, "image_id": 11, "category_id": 7, "iscrowd": 1, "segmentation": uncompressed_rle(m["crowd"])},
            {"id": 4, "image_id": 12, "category_id": 7, "iscrowd": 0,
             "segmentation": {"size": person["size"], "counts": person["counts"].decode()}},
        ],
    }
    path = root / "annotations/instances_val2017.json"
    path.write_text(json.dumps(data))
    return path


def edit_json(path: Path, edit) -> Path:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------------------------------------------- VOC


def test_voc_default_split_ids_sizes_labels(voc_root: Path) -> None:
    ds = open_dataset(voc_root)
    assert isinstance(ds, VocDataset) and ds.kind == "voc"
    assert ds.classes == VOC_CLASSES and ds.num_classes == 20
    assert [im.id for im in ds.images] == ["2007_000001", "2007_000002"]
    assert [(im.height, im.width) for im in ds.images] == [(20, 30), (24, 16)]
    assert [im.coco_id for im in ds.images] == [1, 2]
    assert ds.has_labels and ds.has_instances and ds.has_semantic
    assert ds.labels("2007_000001").tolist() == [CAT, DOG]
    assert ds.labels("2007_000002").tolist() == [BICYCLE, PERSON]  # difficult objects count
    v = ds.label_vector("2007_000002")
    assert v.dtype == np.float32 and v.shape == (21,)
    assert np.flatnonzero(v).tolist() == [0, BICYCLE, PERSON]
    assert ds.load_image("2007_000002").shape == (24, 16, 3)
    assert ds.describe()["split"].endswith("train.txt")


def test_voc_instances_and_semantic(voc_root: Path) -> None:
    ds = VocDataset(voc_root)
    gt = voc_ground_truth()
    for i, (obj, cls) in gt.items():
        inst = ds.instances(i)
        values = [v for v in np.unique(obj) if 0 < v < IGNORE]
        assert len(inst) == len(values) and inst.masks.dtype == bool
        for n, v in enumerate(values):
            assert np.array_equal(inst.masks[n], obj == v)
        assert not inst.iscrowd.any()
        assert np.array_equal(ds.semantic(i), cls)
    assert ds.instances("2007_000001").classes.tolist() == [CAT, DOG]  # DOG by majority over a few CAT pixels
    assert ds.instances("2007_000002").classes.tolist() == [PERSON, PERSON, BICYCLE]
    assert (ds.semantic("2007_000002")[0] == IGNORE).all()


def test_voc_split_file_all_annotations_and_no_png(voc_root: Path) -> None:
    ds = VocDataset(voc_root, split=voc_root / "train_aug.txt")
    assert [im.id for im in ds.images] == list(VOC_IMAGES)
    assert (ds.info("2007_000003").height, ds.info("2007_000003").width) == (18, 18)  # from the JPEG header
    assert ds.instances("2007_000003") is None and ds.semantic("2007_000003") is None
    assert ds.labels("2007_000003").tolist() == [CAR]
    assert len(VocDataset(voc_root, split=str(voc_root / "train_aug.txt"))) == 3
    (voc_root / "ImageSets/Segmentation/train.txt").unlink()
    assert [im.id for im in VocDataset(voc_root).images] == list(VOC_IMAGES)  # every Annotations XML


def test_voc_named_split_main_fallback_and_classes_txt(voc_root: Path) -> None:
    (voc_root / "ImageSets/Main").mkdir()
    (voc_root / "ImageSets/Main/val.txt").write_text("2007_000003\n")
    assert [im.id for im in VocDataset(voc_root, split="val").images] == ["2007_000003"]
    with pytest.raises(LiidError, match="nosuch"):
        VocDataset(voc_root, split="nosuch")
    (voc_root / "classes.txt").write_text("background\ncat\ndog\nperson\nbicycle\ncar\n")
    ds = VocDataset(voc_root, split=voc_root / "train_aug.txt")
    assert ds.classes == ["background", "cat", "dog", "person", "bicycle", "car"]
    assert ds.labels("2007_000002").tolist() == [3, 4]


def test_voc_bad_lists(voc_root: Path) -> None:
    lst = voc_root / "dup.txt"
    lst.write_text("2007_000001\n2007_000001\n")
    with pytest.raises(LiidError, match="dup.txt.*2007_000001"):
        VocDataset(voc_root, split=lst)
    lst.write_text("\n")
    with pytest.raises(LiidError, match="dup.txt.*empty"):
        VocDataset(voc_root, split=lst)
    with pytest.raises(LiidError, match="missing.txt"):
        VocDataset(voc_root, split=voc_root / "missing.txt")


def test_voc_truncated_jpeg(voc_root: Path) -> None:
    f = voc_root / "JPEGImages/2007_000001.jpg"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    ds = VocDataset(voc_root)
    with pytest.raises(LiidError, match="2007_000001.jpg"):
        ds.load_image("2007_000001")


def test_voc_missing_xml_and_image(voc_root: Path) -> None:
    (voc_root / "Annotations/2007_000002.xml").unlink()
    with pytest.raises(LiidError, match=r"2007_000002\.xml"):
        VocDataset(voc_root)
    write_xml(voc_root / "Annotations/2007_000002.xml", ["person"], (24, 16))
    (voc_root / "JPEGImages/2007_000001.jpg").unlink()
    with pytest.raises(LiidError, match=r"2007_000001\.jpg"):
        VocDataset(voc_root)


def test_voc_unknown_label_name(voc_root: Path) -> None:
    write_xml(voc_root / "Annotations/2007_000002.xml", ["person", "unicorn"], (24, 16))
    with pytest.raises(LiidError, match=r"2007_000002\.xml.*unicorn"):
        VocDataset(voc_root)


def test_voc_png_wrong_size(voc_root: Path) -> None:
    write_palette_png(voc_root / "SegmentationObject/2007_000001.png", np.zeros((10, 10), np.uint8))
    ds = VocDataset(voc_root)
    with pytest.raises(LiidError, match=r"SegmentationObject/2007_000001\.png"):
        ds.instances("2007_000001")
    write_palette_png(voc_root / "SegmentationClass/2007_000002.png", np.zeros((24, 15), np.uint8))
    with pytest.raises(LiidError, match=r"SegmentationClass/2007_000002\.png"):
        ds.semantic("2007_000002")


# --------------------------------------------------------------------------------------------------- COCO


def test_coco_ids_sizes_labels(coco_json: Path) -> None:
    ds = open_dataset(coco_json)
    assert isinstance(ds, CocoDataset) and ds.kind == "coco"
    assert ds.classes == ["background", "dog", "cat", "person"]  # ordered by category id 1, 3, 7
    assert ds.images_dir == coco_json.parent.parent / "val2017"
    assert [(im.id, im.coco_id, im.height, im.width) for im in ds.images] == [
        ("a", 11, 20, 30), ("b", 12, 16, 16), ("c", 13, 8, 12)]
    assert ds.labels("a").tolist() == [1, 2, 3]  # the crowd person counts as present
    assert ds.labels("b").tolist() == [3]
    assert ds.labels("c").tolist() == []
    assert np.flatnonzero(ds.label_vector("c")).tolist() == [0]
    assert np.flatnonzero(ds.label_vector("a")).tolist() == [0, 1, 2, 3]
    assert ds.load_image("c").shape == (8, 12, 3)


def test_coco_instances_masks(coco_json: Path) -> None:
    ds = CocoDataset(coco_json)
    m = coco_masks()
    inst = ds.instances("a")
    assert inst.masks.shape == (3, 20, 30)
    assert np.array_equal(inst.masks[0], cat_rect())  # polygon
    assert np.array_equal(inst.masks[1], m["dog"])  # uncompressed RLE
    assert np.array_equal(inst.masks[2], m["crowd"])  # uncompressed RLE, crowd
    assert inst.classes.tolist() == [2, 1, 3] and inst.iscrowd.tolist() == [False, False, True]
    b = ds.instances("b")
    assert np.array_equal(b.masks[0], m["person"]) and b.classes.tolist() == [3]  # compressed RLE
    c = ds.instances("c")
    assert len(c) == 0 and c.masks.shape == (0, 8, 12)


def test_coco_semantic_crowd(coco_json: Path) -> None:
    ds = CocoDataset(coco_json)
    m = coco_masks()
    want = np.zeros((20, 30), np.uint8)
    want[m["crowd"]] = IGNORE
    want[cat_rect()] = 2  # a non-crowd instance wins over the crowd region
    want[m["dog"]] = 1  # the smaller instance on top
    assert np.array_equal(ds.semantic("a"), want)
    assert np.array_equal(ds.semantic("b"), m["person"].astype(np.uint8) * 3)
    assert not ds.semantic("c").any()


def test_coco_images_dir_rule(coco_json: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    (coco_json.parent.parent / "val2017").rename(other)
    with pytest.raises(LiidError, match=r"instances_val2017\.json.*--images"):
        CocoDataset(coco_json)
    assert CocoDataset(coco_json, images=other).images_dir == other
    with pytest.raises(LiidError, match="nowhere"):
        CocoDataset(coco_json, images=tmp_path / "nowhere")
    other.rename(coco_json.parent / "val2017")  # next to the JSON
    assert CocoDataset(coco_json).images_dir == coco_json.parent / "val2017"
    (coco_json.parent / "val2017").rename(coco_json.parent.parent / "JPEGImages")  # a VOC-layout root
    voc_style = coco_json.rename(coco_json.parent / "instances.json")
    assert CocoDataset(voc_style).images_dir == coco_json.parent.parent / "JPEGImages"


def test_coco_unknown_category_and_image(coco_json: Path) -> None:
    edit_json(coco_json, lambda d: d["annotations"][1].update(category_id=99))
    with pytest.raises(LiidError, match=r"instances_val2017\.json.*annotation 2.*99"):
        CocoDataset(coco_json)
    edit_json(coco_json, lambda d: d["annotations"][1].update(category_id=1, image_id=55))
    with pytest.raises(LiidError, match=r"instances_val2017\.json.*annotation 2.*55"):
        CocoDataset(coco_json)


def test_coco_malformed(coco_json: Path, tmp_path: Path) -> None:
    with pytest.raises(LiidError, match="absent.json"):
        CocoDataset(tmp_path / "absent.json")
    edit_json(coco_json, lambda d: d.pop("categories"))
    with pytest.raises(LiidError, match=r"instances_val2017\.json.*categories"):
        CocoDataset(coco_json)
    coco_json.write_text("[1, 2]")
    with pytest.raises(LiidError, match=r"instances_val2017\.json"):
        CocoDataset(coco_json)


def test_coco_missing_image_file_and_duplicate_stem(coco_json: Path) -> None:
    (coco_json.parent.parent / "val2017/b.jpg").unlink()
    with pytest.raises(LiidError, match=r"b\.jpg"):
        CocoDataset(coco_json)
    edit_json(coco_json, lambda d: d["images"][1].update(file_name="a.png"))
    with pytest.raises(LiidError, match="same id 'a'"):
        CocoDataset(coco_json)


# ------------------------------------------------------------------------------- image folder, open_dataset


def test_image_folder(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "b.jpg", 10, 12)
    Image.new("RGB", (7, 5)).save(tmp_path / "a.PNG")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    write_jpeg(tmp_path / "sub/c.jpg", 4, 4)
    ds = open_dataset(tmp_path)
    assert isinstance(ds, ImageFolderDataset) and ds.kind == "images" and not ds.has_labels
    assert [(im.id, im.height, im.width) for im in ds.images] == [("a", 5, 7), ("b", 10, 12)]
    assert ds.classes == ["background"] and ds.instances("a") is None
    with pytest.raises(LiidError, match="has no image labels"):
        ds.labels("a")
    write_jpeg(tmp_path / "a.jpg", 3, 3)
    with pytest.raises(LiidError, match="'a'"):
        ImageFolderDataset(tmp_path)


def test_open_dataset_rules(tmp_path: Path, voc_root: Path, coco_json: Path) -> None:
    with pytest.raises(LiidError, match="expected a VOC root"):
        open_dataset(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LiidError, match="expected a VOC root"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(LiidError, match="VOC roots only"):
        open_dataset(coco_json, split="train")
    with pytest.raises(LiidError, match="COCO JSONs only"):
        open_dataset(voc_root, images=tmp_path)
    assert len(open_dataset(voc_root, split=voc_root / "train_aug.txt")) == 3


def test_registry(voc_root: Path) -> None:
    calls = []

    def factory() -> Dataset:
        calls.append(1)
        return VocDataset(voc_root)

    register_dataset("test_voc_tiny", factory)
    try:
        assert calls == []  # lazy
        with pytest.raises(LiidError, match="already registered"):
            register_dataset("test_voc_tiny", factory)
        assert len(open_dataset("test_voc_tiny")) == 2 and calls == [1]
        with pytest.raises(LiidError, match="registered"):
            open_dataset("test_voc_tiny", split="val")
    finally:
        unregister_dataset("test_voc_tiny")


# ------------------------------------------------------------------------------------------ real coco-mini


@pytest.mark.parametrize("split, count", [("train2017", 80), ("val2017", 79)])
def test_coco_mini(split: str, count: int) -> None:
    path = COCO_MINI / f"annotations/instances_{split}.json"
    if not path.exists():
        pytest.skip(f"coco-mini not found: {COCO_MINI}")
    ds = open_dataset(path)
    data = json.loads(path.read_text())
    assert len(ds) == count and ds.num_classes == 80
    cat_index = {c["id"]: k + 1 for k, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    want: dict[int, set[int]] = {im["id"]: set() for im in data["images"]}
    for a in data["annotations"]:
        want[a["image_id"]].add(cat_index[a["category_id"]])
    for im in ds.images:
        assert ds.load_image(im.id).shape == (im.height, im.width, 3)
        assert ds.labels(im.id).tolist() == sorted(want[im.coco_id])
        inst = ds.instances(im.id)
        assert inst.masks.shape[1:] == (im.height, im.width)
        assert inst.masks.reshape(len(inst), -1).any(axis=1).all()  # no annotation decodes to nothing
        assert ds.semantic(im.id).shape == (im.height, im.width)


def test_coco_bad_segmentation(coco_json: Path) -> None:
    edit_json(coco_json, lambda d: d["annotations"][3].update(segmentation={"size": [2, 2], "counts": [1, 3]}))
    ds = CocoDataset(coco_json)
    with pytest.raises(LiidError, match=r"instances_val2017\.json.*annotation 4.*size"):
        ds.instances("b")


def test_voc_class_from_xml_without_class_png(voc_root: Path) -> None:
    (voc_root / "SegmentationClass/2007_000001.png").unlink()
    ds = VocDataset(voc_root)
    assert ds.semantic("2007_000001") is None
    assert ds.instances("2007_000001").classes.tolist() == [CAT, DOG]  # XML object order
