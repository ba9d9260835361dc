"""The ``liid`` command line: one click group, one module per subcommand in ``liid/commands``.

Every subcommand reads and validates its inputs, calls library code, and writes its output atomically.
A ``LiidError``, an ``OSError`` (disk full, read-only folder, ...) or running out of memory becomes one line
``error: ...`` on stderr and exit status 2. Every float option refuses NaN and ±inf (click's usage error).
"""

from __future__ import annotations

import errno
import sys
from typing import Any, NoReturn

import click

from liid import __version__
from liid.commands.guard import guard_all
from liid.commands.options import require_finite_floats
from liid.errors import LiidError


def os_error_line(e: OSError) -> str:
    """``<file>: <reason>`` of an OSError (both files of a rename or copy), else its message."""
    reason = e.strerror or str(e) or type(e).__name__
    if e.filename is None:
        return reason
    files = str(e.filename) if e.filename2 is None else f"{e.filename} -> {e.filename2}"
    return f"{files}: {reason}"


def _out_of_memory(e: BaseException) -> bool:
    """A ``MemoryError`` or torch's (CUDA, MPS) out-of-memory error; torch is not imported for the check."""
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return isinstance(e, MemoryError) or (isinstance(oom, type) and isinstance(e, oom))


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LiidError as e:
            _fail(str(e))
        except OSError as e:
            if e.errno == errno.EPIPE:  # stdout closed by the reader (`liid ... | head`): click's own handling
                raise
            _fail(os_error_line(e))
        except (MemoryError, RuntimeError) as e:  # torch's OutOfMemoryError is a RuntimeError
            if not _out_of_memory(e):
                raise
            _fail(" ".join(f"out of memory: {e}".split()) if str(e) else "out of memory")  # one line


def _fail(message: str) -> NoReturn:
    """The one line ``error: MESSAGE`` on stderr and exit status 2."""
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="liid")
def main() -> None:
    """LIID: image-level labels to instance segmentation training data.

    \b
    Pipeline (each stage a folder on disk; DATASET: VOC root, COCO JSON or image folder):
      liid make-synthetic --out DATA         the embedded default dataset (shapes with exact masks)
      liid proposals DATASET --out P         segment proposals: selective search or MCG/PRM/COCO import
      liid filter-proposals P --out P2       area limits, near-duplicate removal, top N per image
      liid eval-proposals DATASET P          ABO / MABO / recall of proposals against ground truth
      liid train-cls DATASET --out CLS       multi-label classifier whose CAMs give L_Att's targets
      liid train-mil DATASET --proposals P --cams CLS --out MIL   the MIL network on the proposals
      liid extract DATASET --proposals P --mil MIL --out STORE    features + probabilities per proposal
      liid label --method mil-argmax --features STORE --proposals P --out X   no graph (ablation)
      liid build-graph STORE --out GRAPH     kNN graph of all proposals + class terminals
      liid solve-cut --graph GRAPH --out CUT exact multiway cut: a label (or noise) per proposal
      liid export CUT --proposals P --out X  COCO instances JSON + VOC-palette PNGs
      liid inspect --graph GRAPH --cut CUT --dataset DATASET --proposals P --node N --out DIR   why that label
      liid label --method oracle --dataset DATASET --proposals P --out X      GT-box upper bound
      liid evaluate DATASET X                mask AP / AP50 / AP75 / ABO, or mIoU of PNG masks
      liid train-maskrcnn DATASET --train-json X/instances.json --out MRCNN   Mask R-CNN on pseudo-labels
      liid predict-maskrcnn DATASET --model MRCNN --out preds.json
      liid train-deeplab DATASET --masks X/semantic --out DL                  DeepLab on pseudo-masks
    Alternative labelers (liid label --method NAME; all write X/semantic, cam also X/instances.json):
      liid label --method cam --cams CLS --dataset DATASET --out X            CAM (+ Table 9 instances)
      liid train-cls DATASET --out CLS --oaa max; liid label --method oaa --cams CLS ...          OAA
      liid train-cls DATASET --out INT --oaa-targets CLS; liid label --method oaa+ --cams INT ... OAA+
      liid label --method am-saliency --cams CLS --saliency opencv|DIR ...   attention + saliency + CRF
      liid train-dsrg DATASET --cams CLS --saliency opencv --out D; liid label --method dsrg --model D ...
      liid train-vit DATASET --out V; liid label --method vit-sm --model V ...  ViT semantic modulation
    All of it from one config, with a report (KEY VALUE overrides; make demo runs the first):
      liid run --config-file configs/synthetic_demo.yaml|configs/coco_liid.yaml|configs/voc_liid.yaml [KEY VALUE ...]
    """


def _register() -> None:
    from liid.commands import build_graph, export, make_synthetic, solve_cut

    main.add_command(build_graph.command)
    main.add_command(solve_cut.command)
    main.add_command(export.command)
    main.add_command(make_synthetic.command)
    from liid.commands import filter_proposals, proposals
    main.add_command(proposals.command)
    main.add_command(filter_proposals.command)
    from liid.commands import eval_proposals
    main.add_command(eval_proposals.command)
    from liid.commands import train_cls
    main.add_command(train_cls.command)
    from liid.commands import extract, label, train_mil
    main.add_command(train_mil.command)
    main.add_command(extract.command)
    main.add_command(label.command)
    from liid.commands import evaluate
    main.add_command(evaluate.command)
    from liid.commands import train_deeplab
    main.add_command(train_deeplab.command)
    from liid.commands import train_maskrcnn
    main.add_command(train_maskrcnn.command)
    main.add_command(train_maskrcnn.predict_command)
    from liid.commands import train_dsrg, train_vit
    main.add_command(train_dsrg.command)
    main.add_command(train_vit.command)
    from liid.commands import inspect as inspect_cmd
    main.add_command(inspect_cmd.command)
    from liid.commands import run
    main.add_command(run.command)
    require_finite_floats(main)  # after every command is registered: no float option can forget it
    guard_all(main)  # likewise: no command's output may be, hold or lie inside one of its inputs


_register()

if __name__ == "__main__":
    main()
