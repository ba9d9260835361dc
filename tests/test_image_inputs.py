"""What the dataset readers take from annotation files and image files: per-item paths stay inside their
folders (checked when the dataset is opened), and every image mode PIL can hand back decodes to the RGB
uint8 pixels it stands for (or a clear error), with label PNGs kept as indices."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from liid.datasets import CocoDataset, ImageFolderDataset, VocDataset, open_dataset, read_rgb
from liid.datasets.base import contained, listing
from liid.datasets.palette import write_palette_png
from liid.errors import LiidError
from liid.labelers.saliency import SaliencyFolder

ORIENTATION = 0x0112


# ----------------------------------------------------------------------------------------------- builders


def rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_coco(root: Path, images: list[tuple[str, int, int]], files: dict[str, Image.Image] | None = None) -> Path:
    """root/annotations/instances_val2017.json naming ``images`` (file_name, height, width), image ids 1..n,
    no annotations; ``files`` (name → PIL image) are saved into root/val2017."""
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir(exist_ok=True)
    for name, im in (files or {}).items():
        im.save(root / "val2017" / name)
    data = {"images": [{"id": k + 1, "file_name": n, "height": h, "width": w} for k, (n, h, w) in enumerate(images)],
            "categories": [{"id": 1, "name": "cat"}], "annotations": []}
    path = root / "annotations/instances_val2017.json"
    path.write_text(json.dumps(data))
    return path


def write_voc(root: Path, ids: list[str], size: tuple[int, int] = (4, 5)) -> Path:
    """A VOC root: a jpg and a one-cat XML per id, ImageSets/Segmentation/train.txt listing them."""
    for d in ("JPEGImages", "Annotations", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True, exist_ok=True)
    h, w = size
    for k, i in enumerate(ids):
        Image.fromarray(rgb(h, w, k)).save(root / "JPEGImages" / f"{i}.jpg")
        (root / "Annotations" / f"{i}.xml").write_text(
            f"<annotation><size><width>{w}</width><height>{h}</height></size>"
            "<object><name>cat</name></object></annotation>")
    (root / "ImageSets/Segmentation/train.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def folder_of(tmp_path: Path, images: dict[str, Image.Image]) -> ImageFolderDataset:
    folder = tmp_path / "images"
    folder.mkdir()
    for name, im in images.items():
        im.save(folder / name)
    return ImageFolderDataset(folder)


# --------------------------------------------------------------------------------------- path containment


def test_contained_rule(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(b"x")
    (tmp_path / "outside").mkdir()
    (folder / "out").symlink_to(tmp_path / "outside")
    lst = listing(folder)
    assert contained(lst, "a.jpg", "w") == folder / "a.jpg"
    assert contained(folder, "sub/../a.jpg", "w") == folder / "sub/../a.jpg"  # stays inside
    assert contained(folder, "sub/b.jpg", "w") == folder / "sub/b.jpg"
    for bad in ("../a.jpg", "sub/../../a.jpg", str(tmp_path / "x.jpg"), "", ".", "sub/..", "out/x.jpg",
                "out/../a.jpg"):  # out/.. is tmp_path: the symlink is followed before ".." applies
        with pytest.raises(LiidError, match=r"^list\.txt: image 7: .* leads outside "):
            contained(lst, bad, "list.txt: image 7")


def test_coco_file_name_outside_the_images_folder_is_refused_at_open(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    Image.fromarray(rgb(4, 5)).save(tmp_path / "x.jpg")  # exists: today it is opened and gets proposals
    path = write_coco(root, [("a.jpg", 4, 5), ("../../x.jpg", 4, 5)], {"a.jpg": Image.fromarray(rgb(4, 5))})
    with pytest.raises(LiidError, match=r"instances_val2017\.json: image 2 file_name: '\.\./\.\./x\.jpg' leads "
                                        r"outside .*val2017"):
        CocoDataset(path)
    data = json.loads(path.read_text())
    data["images"][1]["file_name"] = str(tmp_path / "x.jpg")  # absolute
    path.write_text(json.dumps(data))
    with pytest.raises(LiidError, match=r"instances_val2017\.json: image 2 file_name: '/.*x\.jpg' leads outside"):
        open_dataset(path)


def test_coco_symlinks_per_item_out_refused_symlinked_folder_and_subfolders_fine(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "sub").mkdir(parents=True)
    Image.fromarray(rgb(4, 5)).save(store / "a.jpg")
    Image.fromarray(rgb(3, 3, 1)).save(store / "sub/b.jpg")
    (store / "same.jpg").symlink_to(store / "a.jpg")  # a link that stays inside is fine
    root = tmp_path / "coco"
    root.mkdir()
    (root / "val2017").symlink_to(store)  # the images folder itself may be a symlink
    path = write_coco(root, [("a.jpg", 4, 5), ("sub/b.jpg", 3, 3), ("same.jpg", 4, 5)])
    ds = CocoDataset(path)
    assert [im.id for im in ds.images] == ["a", "b", "same"]
    assert np.array_equal(ds.load_image("same"), ds.load_image("a"))
    Image.fromarray(rgb(4, 5, 2)).save(tmp_path / "secret.jpg")
    (store / "c.jpg").symlink_to(tmp_path / "secret.jpg")
    edit = json.loads(path.read_text())
    edit["images"].append({"id": 9, "file_name": "c.jpg", "height": 4, "width": 5})
    path.write_text(json.dumps(edit))
    with pytest.raises(LiidError, match=r"instances_val2017\.json: image 9 file_name: 'c\.jpg' leads outside"):
        CocoDataset(path)


def test_voc_list_ids_climbing_out_are_refused_at_open(tmp_path: Path) -> None:
    root = write_voc(tmp_path / "VOC", ["a", "x"])
    lst = root / "ImageSets/Segmentation/train.txt"
    lst.write_text("a\n../x\n")  # today: silently read as JPEGImages/x.jpg
    with pytest.raises(LiidError, match=r"train\.txt: image '\.\./x' leads outside"):
        VocDataset(root)
    aug = root / "train_aug.txt"
    aug.write_text("/JPEGImages/a.jpg /SegmentationClassAug/a.png\n/JPEGImages/../../x.jpg /x.png\n")
    with pytest.raises(LiidError, match=r"train_aug\.txt: image '/JPEGImages/\.\./\.\./x\.jpg' leads outside"):
        open_dataset(root, split=aug)
    aug.write_text("/JPEGImages/a.jpg /SegmentationClassAug/a.png\n")  # SBD's root-relative paths still work
    assert [im.id for im in VocDataset(root, split=aug).images] == ["a"]


def test_voc_symlinked_items_leading_out_are_refused_at_open(tmp_path: Path) -> None:
    root = write_voc(tmp_path / "VOC", ["a", "b"])
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "JPEGImages/b.jpg").rename(outside / "b.jpg")
    (root / "JPEGImages/b.jpg").symlink_to(outside / "b.jpg")
    with pytest.raises(LiidError, match=r"train\.txt: image 'b': 'b\.jpg' leads outside .*JPEGImages"):
        VocDataset(root)
    (root / "JPEGImages/b.jpg").unlink()
    (outside / "b.jpg").rename(root / "JPEGImages/b.jpg")
    (root / "SegmentationObject").mkdir()
    write_palette_png(outside / "a.png", np.zeros((4, 5), np.uint8))
    (root / "SegmentationObject/a.png").symlink_to(outside / "a.png")
    with pytest.raises(LiidError, match=r"train\.txt: image 'a': 'a\.png' leads outside .*SegmentationObject"):
        VocDataset(root)  # at open, not when the ground truth is first read
    (root / "SegmentationObject/a.png").unlink()
    (root / "Annotations/a.xml").rename(outside / "a.xml")
    (root / "Annotations/a.xml").symlink_to(outside / "a.xml")
    (root / "ImageSets/Segmentation/train.txt").unlink()  # ids from Annotations: it is named instead
    with pytest.raises(LiidError, match=r"Annotations: image 'a': 'a\.xml' leads outside"):
        VocDataset(root)


def test_image_folder_symlink_leading_out_is_refused_symlinked_folder_fine(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    Image.fromarray(rgb(4, 5)).save(store / "a.png")
    (tmp_path / "linked").symlink_to(store)
    assert [im.id for im in open_dataset(tmp_path / "linked").images] == ["a"]
    Image.fromarray(rgb(2, 2)).save(tmp_path / "secret.png")
    (store / "b.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(LiidError, match=r"store: image 'b': 'b\.png' leads outside"):
        ImageFolderDataset(store)


def test_saliency_map_symlink_leading_out_is_refused_when_the_folder_is_opened(tmp_path: Path) -> None:
    ds = folder_of(tmp_path, {"a.png": Image.fromarray(rgb(4, 5)), "b.png": Image.fromarray(rgb(4, 5))})
    maps = tmp_path / "maps"
    maps.mkdir()
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(maps / "a.png")
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "elsewhere.png")
    (maps / "b.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(LiidError, match=r"maps: the saliency maps of image 'b': 'b\.png' leads outside"):
        SaliencyFolder(maps, ds)


# ----------------------------------------------------------------------------------------- image decoding


def test_palette_images_come_back_through_the_palette(tmp_path: Path) -> None:
    p = Image.new("P", (3, 1))
    p.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90])
    p.putpixel((1, 0), 1)
    p.putpixel((2, 0), 2)
    t = p.copy()
    t.info["transparency"] = bytes([255, 0, 128])  # per-entry alpha (a tRNS chunk): dropped, colours kept
    one = p.copy()
    one.info["transparency"] = 1  # one transparent index
    ds = folder_of(tmp_path, {"p.png": p, "t.png": t, "one.png": one})
    want = [[[10, 20, 30], [40, 50, 60], [70, 80, 90]]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL warns when such a palette goes to RGB directly
        for i in ("p", "t", "one"):
            im = ds.load_image(i)
            assert im.dtype == np.uint8 and im.tolist() == want, i


def test_grey_modes_are_replicated(tmp_path: Path) -> None:
    grey = Image.fromarray(np.array([[0, 77, 255]], np.uint8))
    la = Image.merge("LA", (grey, Image.fromarray(np.array([[0, 10, 255]], np.uint8))))
    bits = Image.new("1", (3, 1))
    bits.putpixel((1, 0), 1)
    ds = folder_of(tmp_path, {"l.png": grey, "la.png": la, "bits.png": bits})
    assert Image.open(ds.info("la").file).mode == "LA" and Image.open(ds.info("bits").file).mode == "1"
    assert ds.load_image("l").tolist() == [[[0] * 3, [77] * 3, [255] * 3]]
    assert ds.load_image("la").tolist() == [[[0] * 3, [77] * 3, [255] * 3]]  # alpha dropped
    assert ds.load_image("bits").tolist() == [[[0] * 3, [255] * 3, [0] * 3]]


def test_high_bit_depth_grey_is_scaled_by_its_range_not_clipped(tmp_path: Path) -> None:
    v16 = np.array([[0xABCD, 0x0100, 0xFFFF, 0x00FF]], np.uint16)
    want16 = [[[0xAB] * 3, [0x01] * 3, [0xFF] * 3, [0x00] * 3]]
    big = Image.frombytes("I;16B", (4, 1), v16.astype(">u2").tobytes())
    floats = Image.fromarray(np.array([[0.0, 0.2, 1.0, 0.6]], np.float32))
    files = {"le.png": Image.fromarray(v16), "be.tif": big, "i.tif": Image.fromarray(v16.astype(np.int32)),
             "f.tif": floats}
    path = write_coco(tmp_path / "coco", [(n, 1, 4) for n in files], files)
    modes = {n: Image.open(path.parent.parent / "val2017" / n).mode for n in files}
    assert modes == {"le.png": "I;16", "be.tif": "I;16B", "i.tif": "I", "f.tif": "F"}
    ds = CocoDataset(path)
    for i in ("le", "be", "i"):
        assert ds.load_image(i).tolist() == want16, i  # PIL's convert("RGB") gives 255 for 0xABCD, 0x0100
    assert ds.load_image("f").tolist() == [[[0] * 3, [51] * 3, [255] * 3, [153] * 3]]  # round(v * 255)


def test_grey_without_a_range_to_scale_by_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    Image.fromarray(np.array([[-5, 300]], np.int32)).save(folder / "neg.tif")
    Image.fromarray(np.array([[0.5, 2.0]], np.float32)).save(folder / "hot.tif")
    Image.new("LAB", (2, 1)).save(folder / "lab.tif")
    with pytest.raises(LiidError, match=r"neg\.tif: image is 32-bit integer grey \(mode I\) with values -5\.\.300"):
        read_rgb(folder / "neg.tif")
    with pytest.raises(LiidError, match=r"hot\.tif: image is float grey \(mode F\) with values 0\.5\.\.2"):
        read_rgb(folder / "hot.tif")
    with pytest.raises(LiidError, match=r"lab\.tif: image has colour mode LAB"):
        read_rgb(folder / "lab.tif")


def test_cmyk_and_rgba(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (3, 1))
    cmyk.putpixel((0, 0), (255, 0, 0, 0))
    cmyk.putpixel((1, 0), (0, 0, 0, 255))
    cmyk.putpixel((2, 0), (100, 50, 0, 100))
    rgba = Image.fromarray(np.array([[[10, 20, 30, 0], [200, 100, 50, 128]]], np.uint8), mode="RGBA")
    path = write_coco(tmp_path / "coco", [("c.tif", 1, 3), ("a.png", 1, 2)], {"c.tif": cmyk, "a.png": rgba})
    ds = CocoDataset(path)
    # (255 - C)(255 - K) / 255: 155 * 155 / 255 = 94.2, 205 * 155 / 255 = 124.6, 255 * 155 / 255 = 155
    assert ds.load_image("c").tolist() == [[[0, 255, 255], [0, 0, 0], [94, 125, 155]]]
    assert ds.load_image("a").tolist() == [[[10, 20, 30], [200, 100, 50]]]  # alpha dropped, not composited


def save_oriented(pixels: np.ndarray, orientation: int, file: Path) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(pixels).save(file, exif=exif)


def test_exif_orientation_is_applied_and_sizes_follow_it(tmp_path: Path) -> None:
    stored = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10  # 2 rows, 3 columns
    stored[0, 0] = (255, 0, 0)  # the known pixel: stored top-left
    folder = tmp_path / "images"
    folder.mkdir()
    save_oriented(stored, 6, folder / "six.png")  # 6: rotate 90 degrees clockwise to display
    save_oriented(stored, 3, folder / "three.png")  # 3: rotate 180
    ds = ImageFolderDataset(folder)
    assert (ds.info("six").height, ds.info("six").width) == (3, 2)  # from the header, oriented
    six = ds.load_image("six")
    assert six.shape == (3, 2, 3)
    assert six[0, 1].tolist() == [255, 0, 0]  # the stored top-left is now top-right
    assert np.array_equal(six, np.rot90(stored, k=-1))
    assert np.array_equal(ds.load_image("three"), stored[::-1, ::-1])
    assert ds.load_image("three")[1, 2].tolist() == [255, 0, 0]


def test_coco_size_that_does_not_match_the_oriented_image_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    path = write_coco(root, [("six.png", 2, 3), ("ok.png", 3, 2)])  # six.png: the stored, unrotated size
    for n in ("six.png", "ok.png"):
        save_oriented(rgb(2, 3), 6, root / "val2017" / n)
    ds = CocoDataset(path)
    assert ds.load_image("ok").shape == (3, 2, 3)
    with pytest.raises(LiidError, match=r"six\.png: image is 3x2 \(HxW, after EXIF orientation\), the dataset "
                                        r"says 2x3"):
        ds.load_image("six")


def test_voc_label_pngs_must_be_index_maps(tmp_path: Path) -> None:
    root = write_voc(tmp_path / "VOC", ["a"], size=(2, 3))
    for d in ("SegmentationObject", "SegmentationClass"):
        (root / d).mkdir()
    obj = np.array([[0, 1, 1], [255, 2, 0]], np.uint8)
    write_palette_png(root / "SegmentationObject/a.png", obj)
    cls = Image.fromarray(np.array([[0, 8, 8], [255, 12, 0]], np.uint8), mode="P")
    cls.putpalette([0] * 3 * 256)  # all-black palette, one transparent index: the indices are what count
    cls.info["transparency"] = 8
    cls.save(root / "SegmentationClass/a.png")
    ds = VocDataset(root)
    assert ds.semantic("a").tolist() == [[0, 8, 8], [255, 12, 0]]
    assert ds.instances("a").classes.tolist() == [8, 12]
    cases = {
        "RGB": Image.fromarray(np.zeros((2, 3, 3), np.uint8)),
        "I;16": Image.fromarray(np.zeros((2, 3), np.uint16)),
        "LA": Image.merge("LA", (Image.new("L", (3, 2)), Image.new("L", (3, 2)))),
        "1": Image.new("1", (3, 2)),
    }
    for mode, im in cases.items():
        im.save(root / "SegmentationObject/a.png")
        with pytest.raises(LiidError, match=rf"SegmentationObject/a\.png: ground truth must be a palette or 8-bit "
                                            rf"grayscale PNG of indices, got mode {mode}$"):
            ds.instances("a")
    labels = Image.fromarray(obj, mode="L")
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    labels.save(root / "SegmentationObject/a.png", exif=exif)
    with pytest.raises(LiidError, match=r"SegmentationObject/a\.png: ground truth has EXIF orientation 6"):
        ds.instances("a")


def test_saliency_maps_decode_like_images(tmp_path: Path) -> None:
    ds = folder_of(tmp_path, {"p.png": Image.fromarray(rgb(1, 3)), "w.png": Image.fromarray(rgb(1, 3))})
    maps = tmp_path / "maps"
    maps.mkdir()
    p = Image.fromarray(np.array([[0, 1, 2]], np.uint8), mode="P")
    p.putpalette([0, 0, 0, 51, 51, 51, 255, 255, 255])  # index 1 is grey 51: the map means 0.2, not 1 / 255
    p.save(maps / "p.png")
    Image.fromarray(np.array([[0xFFFF, 0x3300, 0]], np.uint16)).save(maps / "w.png")  # 16-bit: 0x33 = 51
    source = SaliencyFolder(maps, ds)
    assert np.allclose(source("p", np.zeros((1, 3, 3), np.uint8)), [[0.0, 0.2, 1.0]])
    assert np.allclose(source("w", np.zeros((1, 3, 3), np.uint8)), [[1.0, 0.2, 0.0]])
