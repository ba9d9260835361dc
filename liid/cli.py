"""The ``liid`` command line: one click group, one module per subcommand in ``liid/commands``.

Every subcommand reads and validates its inputs, calls library code, and writes its output atomically.
A ``LiidError``, an ``OSError`` (disk full, read-only folder, ...) or running out of memory becomes one line
``error: ...`` on stderr and exit status 2. Every float option refuses NaN and ±inf (click's usage error).
"""

from __future__ import annotations

import errno
import importlib
import sys
from collections.abc import MutableMapping
from typing import Any, NoReturn

import click

from liid import __version__
from liid.commands.guard import guarded
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
    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's command list, from the short helps of ``COMMANDS`` (no command module is imported)."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        commands = self.commands
        rows = [(n, commands.short_help(n, limit) if isinstance(commands, LazyCommands)
                 else self.get_command(ctx, n).get_short_help_str(limit)) for n in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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


# name -> (module, attribute, short help): a command's module is imported when the command is used, so
# `liid --version` and `liid --help` import no torch (tests/test_cli_startup.py keeps the short helps equal to the
# commands' own).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "make-synthetic": ("liid.commands.make_synthetic", "command",
        'Generate a synthetic instance segmentation dataset in --out DIR: textured shapes (1-4 per image, '
        'several classes, occluding each other) on cluttered backgrounds, with exact masks.'),
    "proposals": ("liid.commands.proposals", "command",
        'Segment proposals for every image of DATASET, filtered, written as a proposal store to DIR.'),
    "filter-proposals": ("liid.commands.filter_proposals", "command",
        "Filter every image's proposals of the proposal store STORE into a new store DIR."),
    "eval-proposals": ("liid.commands.eval_proposals", "command",
        'Score the proposals of STORE against the ground-truth instances of DATASET (a VOC root, a COCO '
        'instances JSON or a registered name): ABO (mean best mask IoU), MABO (mean of per-class ABOs) and '
        'recall at IoU 0.5 / 0.7, for the top 20, top 40 and all proposals of each image; crowd instances are'
        ' not counted.'),
    "train-cls": ("liid.commands.train_cls", "command",
        "Train the multi-label CAM classifier on DATASET's image labels; write DIR/checkpoint.pt, log.jsonl, "
        'loss.png and train.json.'),
    "train-mil": ("liid.commands.train_mil", "command",
        "Train the MIL network (ResNet + RoIPool 7x7 + GAP + FC(K+1)) on DATASET's proposals with L = "
        'alpha*L_Att + beta*L_MIL + gamma*L_Cent (eq.'),
    "extract": ("liid.commands.extract", "command",
        'Run the MIL network over every image of DATASET and write, per proposal, its feature f and its '
        'probabilities p (K+1), with the image labels: the feature store `liid build-graph` reads.'),
    "label": ("liid.commands.label", "command",
        "Label the dataset's proposals (or, for the attention methods, its images) with METHOD; write COCO "
        'instances JSON (methods that define instances) and semantic PNGs to OUT.'),
    "build-graph": ("liid.commands.build_graph", "command",
        'Build the kNN graph of all proposals with the classes as terminals, and its components.'),
    "solve-cut": ("liid.commands.solve_cut", "command",
        'Label every node with the exact multiway cut, component by component.'),
    "export": ("liid.commands.export", "command",
        'Drop background, per-class NMS, write COCO instances JSON and semantic PNGs to OUT.'),
    "inspect": ("liid.commands.inspect", "command",
        "Show why a proposal got its label: its crop with its terminal weights, the cut's label and the local"
        " cost of every label (the cut value the node adds with every other label fixed: the cut's label has "
        "the least), and its heaviest neighbours' crops with the edge weights and their labels."),
    "evaluate": ("liid.commands.evaluate", "command",
        'Evaluate PRED against the ground truth of DATASET (a VOC root, a COCO instances JSON or a registered'
        ' name).'),
    "train-maskrcnn": ("liid.commands.train_maskrcnn", "command",
        'Train Mask R-CNN (torchvision R50-FPN, or --backbone: another ResNet or EfficientNet-Lite under the '
        'FPN) on the pseudo instances of DATASET; write DIR/checkpoint.pt, log.jsonl, loss.png, '
        'predictions_epochN.json and train.json.'),
    "predict-maskrcnn": ("liid.commands.train_maskrcnn", "predict_command",
        'Predict instances on every image of DATASET with a trained Mask R-CNN; write a COCO results list '
        '(RLE of mask > 0.5, score) that `liid evaluate DATASET OUT` scores.'),
    "train-deeplab": ("liid.commands.train_deeplab", "command",
        "Train DeepLabv3 (ResNet or EfficientNet-Lite trunk) on DATASET's images and the pseudo-masks in "
        '--masks; write DIR/checkpoint.pt, log.jsonl, loss.png, train.json and DIR/pred_epochN/ (predictions '
        'of each evaluation).'),
    "train-dsrg": ("liid.commands.train_dsrg", "command",
        "Train DSRG (deep seeded region growing) on DATASET's images and image labels: a DeepLab learns from "
        'sparse seeds and grows them itself after every epoch.'),
    "train-vit": ("liid.commands.train_vit", "command",
        "Train the multi-class-token ViT (MCTformer-V2 style, paper 002) on DATASET's image labels; write "
        'DIR/checkpoint.pt, log.jsonl, loss.png and train.json.'),
    "run": ("liid.commands.run", "command",
        'Run the whole pipeline from a config: dataset → proposals → classifier → MIL → extract → graph → cut'
        ' → export (or any `liid label` method: LABELER.METHOD) → baselines → evaluation → segmenter → '
        'report.'),
}


def _prepare(command: click.Command) -> click.Command:
    """The rules every command gets where it is registered: no float option takes NaN or ±inf, and no output may
    be, hold or lie inside one of the command's inputs."""
    require_finite_floats(command)
    guarded(command)
    return command


class LazyCommands(MutableMapping):
    """``Group.commands`` that imports a command's module at its first use (``COMMANDS``); a command added with
    ``add_command`` is prepared the same way."""

    def __init__(self, table: dict[str, tuple[str, str, str]]):
        self.table = dict(table)
        self.loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self.loaded:
            if name not in self.table:
                raise KeyError(name)
            module, attribute, _ = self.table[name]
            self.loaded[name] = _prepare(getattr(importlib.import_module(module), attribute))
        return self.loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self.loaded[name] = _prepare(command)
        self.table.setdefault(name, (command.callback.__module__ if command.callback else "", "", ""))

    def __delitem__(self, name: str) -> None:
        self.loaded.pop(name, None)
        del self.table[name]

    def __iter__(self):
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)

    def short_help(self, name: str, limit: int) -> str:
        """The short help ``liid --help`` lists, without importing an unloaded command."""
        if name in self.loaded:
            return self.loaded[name].get_short_help_str(limit)
        return click.Command(name, help=self.table[name][2]).get_short_help_str(limit)  # click's own shortening


main.commands = LazyCommands(COMMANDS)


if __name__ == "__main__":
    main()
