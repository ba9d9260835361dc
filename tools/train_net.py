"""Train (or evaluate) Mask R-CNN with detectron2 on LIID pseudo-labels.

    python tools/train_net.py --config-file detection/configs/mask_rcnn_R_50_FPN_voc_pseudo.yaml \\
        --num-gpus 8 --liid-root datasets [KEY VALUE ...]
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth

A thin script over detectron2's ``DefaultTrainer``, in the manner of detectron2's own ``tools/train_net.py``:
take this file as an example and change it, rather than growing options. The datasets the configs name
(``liid_voc_pseudo_train``, ``liid_voc_val``, ...) are registered from ``--liid-root`` (default: the
``LIID_DATASETS`` environment variable, else ``datasets``) in the layout of ``detection/register.py``;
evaluation is ``COCOEvaluator`` (mask and box AP). A dataset of your own needs no code:
``--register NAME=JSON:IMAGES`` (repeatable) registers a COCO instances JSON (``liid export``'s, or any) with
its image folder, checked like the standard ones before training, e.g.

    python tools/train_net.py --config-file detection/configs/mask_rcnn_R_50_FPN_voc_pseudo.yaml \
        --register my_train=cut_out/instances.json:data/JPEGImages DATASETS.TRAIN '("my_train",)'

Trailing ``KEY VALUE`` pairs override the config, e.g. ``SOLVER.IMS_PER_BATCH 8 SOLVER.BASE_LR 0.01``.

detectron2 is imported lazily: without it the script prints how to install it and exits with status 2.
"""

from __future__ import annotations

import os
import sys

INSTALL = ("train_net.py: detectron2 is not installed. Install it from source after torch (a CUDA build "
           "matching your driver on a GPU machine): pip install --no-build-isolation "
           "'git+https://github.com/facebookresearch/detectron2.git' (README: Mask R-CNN with detectron2)")


def _require_detectron2() -> None:
    try:
        import detectron2  # noqa: F401
    except ImportError:
        print(INSTALL, file=sys.stderr)
        sys.exit(2)


def setup(args):
    """The config: detectron2's defaults, the file, then the command-line ``KEY VALUE`` pairs."""
    from detectron2.config import get_cfg
    from detectron2.engine import default_setup

    from liid.detection.d2_lite import add_lite_config, check_lite_input  # also registers build_lite_fpn_backbone

    cfg = get_cfg()
    add_lite_config(cfg)  # the MODEL.LITE keys of the EfficientNet-Lite configs
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.BACKBONE.NAME == "build_lite_fpn_backbone":
        check_lite_input(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def build_trainer_class():
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import COCOEvaluator

    class Trainer(DefaultTrainer):
        """DefaultTrainer with COCO evaluation (segm and bbox AP) on every test dataset."""

        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
            # the tasks named: inferred from the predictions, segm AP goes missing when a model predicts nothing
            return COCOEvaluator(dataset_name, tasks=("bbox", "segm"), output_dir=output_folder)

    return Trainer


def main(args):
    from detectron2.checkpoint import DetectionCheckpointer

    from liid.detection.register import check_config_datasets, register_liid_datasets, register_specs
    from liid.errors import LiidError

    register_liid_datasets(args.liid_root)  # in every worker process: launch() spawns them
    try:
        extra = register_specs(args.register)
    except LiidError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        cfg = setup(args)
    except LiidError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    try:  # the LIID datasets the config names: present, readable, NUM_CLASSES categories; before any training
        check_config_datasets(cfg.MODEL.ROI_HEADS.NUM_CLASSES, () if args.eval_only else cfg.DATASETS.TRAIN,
                              cfg.DATASETS.TEST, args.liid_root, extra)
    except LiidError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    trainer_cls = build_trainer_class()
    if args.eval_only:
        model = trainer_cls.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return trainer_cls.test(cfg, model)
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv: list[str] | None = None) -> None:
    _require_detectron2()
    from detectron2.engine import default_argument_parser, launch

    parser = default_argument_parser()
    parser.add_argument("--liid-root", default=os.environ.get("LIID_DATASETS", "datasets"),
                        help="folder holding voc/, coco/, synthetic/ in the layout of detection/register.py")
    parser.add_argument("--register", action="append", default=[], metavar="NAME=JSON:IMAGES",
                        help="register a COCO instances JSON and its image folder as dataset NAME (repeatable)")
    args = parser.parse_args(argv)
    print("Command Line Args:", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    cli()
