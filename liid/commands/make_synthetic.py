"""``liid make-synthetic --out DIR``: the embedded default dataset (textured shapes with exact masks).

A thin command over ``liid.datasets.synthetic.write_synthetic``: validates the settings, skips when DIR was
made with the same settings, refuses a different DIR without --overwrite, and writes DIR atomically.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from liid.atomic import check_parent
from liid.datasets.synthetic import CLASSES, SyntheticConfig, settings, write_synthetic
from liid.stage import up_to_date

_CLASS_HELP = ", ".join(f"{c.name} ({c.texture})" for c in CLASSES)


@click.command("make-synthetic")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Dataset directory to write.")
@click.option("--images", default=500, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Number of images.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0),
              help="Random seed; image k depends only on (seed, k, --size, --classes), not on --images.")
@click.option("--size", default=160, show_default=True, type=click.IntRange(64, 1024),
              help="Image width and height in pixels.")
@click.option("--classes", "num_classes", default=len(CLASSES), show_default=True,
              type=click.IntRange(2, len(CLASSES)), help=f"Number of object classes, the first of: {_CLASS_HELP}.")
@click.option("--val-fraction", default=0.2, show_default=True, type=click.FloatRange(0.0, 0.9),
              help="Share of images in the val split (every 1/f-th image).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
def command(out: Path, images: int, seed: int, size: int, num_classes: int, val_fraction: float,
            overwrite: bool) -> None:
    """Generate a synthetic instance segmentation dataset in --out DIR: textured shapes (1-4 per image, several
    classes, occluding each other) on cluttered backgrounds, with exact masks.

    \b
    DIR/JPEGImages/<id>.jpg              images (ids syn_000000, syn_000001, ...)
    DIR/Annotations/<id>.xml             PASCAL VOC boxes and class names, one <object> per instance
    DIR/SegmentationObject/<id>.png      instance n of the XML at pixel value n, 0 background
    DIR/SegmentationClass/<id>.png       class index per pixel (classes.txt order), 0 background
    DIR/ImageSets/Segmentation/{train,val,trainval}.txt
    DIR/annotations/instances_{train,val}.json   COCO instances (RLE masks) of the same images
    DIR/classes.txt, DIR/synthetic.json  class names; settings and counts
    DIR/preview.png                      the first 16 images with instance outlines
    """
    config = SyntheticConfig(size=size, classes=num_classes)
    check_parent(out)
    if up_to_date(out, "synthetic.json", "inputs", settings(images, seed, config, val_fraction), overwrite):
        return
    t0 = time.perf_counter()
    summary = write_synthetic(out, images, seed=seed, config=config, val_fraction=val_fraction,
                              overwrite=overwrite)
    click.echo(f"{out}: {summary['images']} images ({summary['train']} train, {summary['val']} val), "
               f"{summary['instances']} instances, {len(summary['classes']) - 1} classes "
               f"in {time.perf_counter() - t0:.1f} s")
