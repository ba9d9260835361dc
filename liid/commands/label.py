"""``liid label --method NAME ...``: pseudo-labels from a labeler other than the full LIID pipeline.

Writes what ``liid export`` writes (OUT/instances.json, OUT/semantic/*.png, OUT/export.json), so
``liid evaluate`` and the segmenter trainers take every method's output alike.

The methods are the labelers of the registry (``liid.labelers.registry``), read when the command runs, not
when it is imported: a labeler registered later (a plugin, a test) is a ``--method`` choice, its summary is in
the ``--method`` help and its own options are options of the command. The options below are the shared ones;
each method reads the subset it declares, and an option given that it does not read is refused in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from liid.atomic import check_inputs
from liid.commands.guard import OUTPUTS, command_inputs
from liid.commands.options import finite_type, is_finite_type
from liid.errors import LiidError
from liid.labelers.cam import KINDS, THRESHOLD
from liid.labelers.registry import EVERY_METHOD, LABELERS, Labeler, extra_params, get_labeler, reserve_options

# The shared options that only the methods that define instances read: for a semantic-only method they are
# refused with "defines no instance output" (the others with "not an option of --method ...").
INSTANCE_OPTIONS = frozenset({"kind", "nms_iou"})


def _sentence(text: str) -> str:
    """``text`` ending with a full stop."""
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


def method_help() -> str:
    """The ``--method`` help, from the registered labelers' summaries: ``name: summary.`` for the methods that
    define instances, then ``Semantic maps only: name (summary), ...``; both in registration order."""
    labelers = list(LABELERS.values())
    parts = [f"{lab.name}: {_sentence(lab.summary)}" for lab in labelers if lab.instances]
    semantic = [f"{lab.name} ({lab.summary.strip().rstrip('.')})" for lab in labelers if not lab.instances]
    if semantic:
        parts.append(f"Semantic maps only: {', '.join(semantic)}.")
    return " ".join(parts)


class MethodChoice(click.Choice):
    """``click.Choice`` over the registered labelers' names, read at each use (parsing, help, completion)."""

    def __init__(self) -> None:
        """No fixed choices: ``choices`` is the registry's names."""
        super().__init__(())

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        """The names registered now."""
        return tuple(LABELERS)

    @choices.setter
    def choices(self, value: object) -> None:
        """Ignored: click's constructor assigns the (empty) static choices."""

    def __repr__(self) -> str:
        """Without reading the registry (the float-type check of ``liid.cli`` sees every type at import)."""
        return "MethodChoice(<registered labelers>)"


class MethodOption(click.Option):
    """The ``--method`` option, whose help lists the registered labelers' summaries (``method_help``)."""

    @property  # type: ignore[override]
    def help(self) -> str:
        """Built from the registry at each use."""
        return method_help()

    @help.setter
    def help(self, value: object) -> None:
        """Ignored: the help is the registry's."""


def labeler_params() -> list[click.Parameter]:
    """The registered labelers' own options, with the finite float types ``liid.cli`` gives every float option
    at import (these may be registered after it ran)."""
    found = extra_params()
    for p in found:
        if not is_finite_type(p.type):
            p.type = finite_type(p.type)
    return found


class LabelCommand(click.Command):
    """``liid label``: its static params are the shared options; the registered labelers' own options are added
    at each use (``get_params``) and get the same output/input guard as the shared ones (``invoke``)."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        """The shared options, then the labelers' own, then --help."""
        help_option = self.get_help_option(ctx)
        return [*self.params, *labeler_params(), *([] if help_option is None else [help_option])]

    def invoke(self, ctx: click.Context) -> Any:
        """The rule of ``liid.commands.guard`` for the labelers' own options (``guard_all`` wrapped the callback
        with it for the shared ones): the output is never one of their inputs, nor inside or around one."""
        extra = labeler_params()
        if extra:
            inputs = command_inputs(click.Command(self.name, params=extra), ctx.params)
            for name in OUTPUTS:
                if ctx.params.get(name) is not None:
                    check_inputs(ctx.params[name], inputs)
        return super().invoke(ctx)


def shared_params() -> list[click.Parameter]:
    """The options of ``liid label`` itself (what a labeler's ``extra_params`` may not redefine)."""
    return list(command.params)


def _flag(param: click.Parameter, value: object = None) -> str:
    """The option as given: ``--crf`` or ``--no-crf`` by the value of an on/off pair (both without one), else its
    longest name."""
    name = max(param.opts, key=len)
    if isinstance(param, click.Option) and param.secondary_opts:
        off = max(param.secondary_opts, key=len)
        return off if value is False else name if value is True else f"{name}/{off}"
    return name


def given_options(ctx: click.Context) -> dict[str, object]:
    """The parameters given explicitly (command line, environment, default map), by name, with their values;
    not those left at their defaults, whatever the value."""
    return {p.name: ctx.params[p.name] for p in ctx.command.get_params(ctx)
            if p.name in ctx.params and ctx.get_parameter_source(p.name) is not ParameterSource.DEFAULT}


def method_params(labeler: Labeler, ctx: click.Context) -> dict[str, Any]:
    """The values of the options ``labeler`` reads (None for one left unset), in the command's order: what its
    ``extra_checks`` and ``run`` get."""
    return {p.name: ctx.params.get(p.name) for p in ctx.command.get_params(ctx) if p.name in labeler.options}


def check_method_options(method: str, ctx: click.Context) -> None:
    """One line for an option given that the method does not read, or a required one missing (before any work);
    between the two, the method's own ``extra_checks``."""
    labeler = get_labeler(method)
    params = {p.name: p for p in ctx.command.get_params(ctx)}
    given = given_options(ctx)
    extra = [k for k in given if k not in labeler.options and k not in EVERY_METHOD]
    instance_only = [k for k in extra if k in INSTANCE_OPTIONS] if not labeler.instances else []
    if instance_only:
        k = instance_only[0]
        readers = ", ".join(name for name, lab in LABELERS.items() if k in lab.options)
        raise LiidError(f"--method {method} defines no instance output (it writes semantic maps only); "
                        f"{_flag(params[k], given[k])} is for --method {readers}")
    if extra:
        takes = ", ".join(_flag(p) for p in params.values() if p.name in labeler.options)
        raise LiidError(f"{', '.join(_flag(params[k], given[k]) for k in extra)}: not an option of --method "
                        f"{method} (it takes {takes})")
    if labeler.extra_checks is not None:
        labeler.extra_checks(method_params(labeler, ctx))
    for k, what in labeler.required.items():
        if ctx.params.get(k) is None:
            raise LiidError(f"--method {method} needs {what}")


@click.command("label", cls=LabelCommand)
@click.option("--method", cls=MethodOption, required=True, type=MethodChoice(),
              help="The registered labelers (see liid.labelers.registry); the help lists their summaries.")
@click.option("--features", type=click.Path(path_type=Path), default=None,
              help="mil-argmax: the feature store written by `liid extract`.")
@click.option("--dataset", default=None,
              help="All but mil-argmax: the dataset (VOC root, COCO JSON or registered name) whose images are "
                   "labelled, with its ground-truth instances (oracle) or image labels (the others).")
@click.option("--split", default=None, help="With --dataset, VOC roots: the image set (e.g. train) or a list file.")
@click.option("--images", "images_dir", type=click.Path(path_type=Path), default=None,
              help="With --dataset, COCO JSONs: the image folder (default: found from the JSON's location).")
@click.option("--proposals", type=click.Path(path_type=Path), default=None,
              help="Proposal store (mil-argmax, oracle, and cam with --instances proposal).")
@click.option("--cams", "cams", type=click.Path(path_type=Path), default=None,
              help="cam, am-saliency: a `liid train-cls` folder or its checkpoint.pt; oaa: a `train-cls --oaa` "
                   "folder (its oaa.npz); oaa+: a `train-cls --oaa-targets` folder.")
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="dsrg: a `liid train-dsrg` folder (its retrained network once `--retrain-epochs` has run) or a "
                   "checkpoint file; vit-sm: a `liid train-vit` folder.")
@click.option("--cam-threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help=f"cam, oaa, oaa+, vit-sm: background below this attention value (cam: also the level of the "
                   f"regions that become instances); am-saliency: Algorithm 2's background threshold "
                   f"[default: {THRESHOLD}].")
@click.option("--instances", "kind", type=click.Choice(KINDS), default=None,
              help="cam: each CAM region's mask: its box (rect), the ellipse inscribed in it, or the proposal "
                   "whose box overlaps it most (proposal; needs --proposals) [default: rect]. The other methods "
                   "define no instances.")
@click.option("--saliency", default=None,
              help="am-saliency: 'opencv' (the built-in fine-grained detector, run by successive erasing) or a "
                   "folder of precomputed <image id>.png saliency maps (e.g. DSS/DHSN) [default: opencv].")
@click.option("--crf/--no-crf", "crf", default=None,
              help="am-saliency: refine the fused labels with the dense CRF of eq. 10; dsrg: refine the network's "
                   "probabilities with DSRG's dense CRF (its test-time step) [default: --crf].")
@click.option("--rounds", type=click.IntRange(1, 3), default=None,
              help="am-saliency with the built-in detector: successive-erasing rounds (Algorithm 1) [default: 3].")
@click.option("--device", default=None, help="cam, oaa+, am-saliency, dsrg, vit-sm: auto (default), cpu, cuda or "
              "cuda:N.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output directory.")
@click.option("--any-label", is_flag=True,
              help="mil-argmax: argmax over all classes, not only the image's labels and background.")
@click.option("--nms-iou", type=click.FloatRange(0.0, 1.0), default=0.4, show_default=True,
              help="mil-argmax, oracle, cam: per-class NMS IoU threshold on the instances' boxes (as in "
                   "`liid export`).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
def command(method: str, out: Path, overwrite: bool, **options: object) -> None:
    """Label the dataset's proposals (or, for the attention methods, its images) with METHOD; write COCO
    instances JSON (methods that define instances) and semantic PNGs to OUT.

    \b
    Skipped when OUT already holds the labels of the same method, inputs and settings. An option the method
    does not read is refused, even at its default value (e.g. --nms-iou for a method without instances).

    \b
    oracle: a proposal whose box has IoU > 0.5 with a non-crowd ground-truth instance box takes the
    class of the box it overlaps most, with that IoU as its score; the others are background. Then the
    export of `liid export` (per-class NMS, COCO JSON, PNGs), so `liid evaluate` scores it alike.

    \b
    cam: the classifier's CAMs at each image's size; semantic PNG = per pixel the image's label with the
    highest CAM, background below --cam-threshold; each connected region of a label's CAM above the
    threshold is an instance scored by its peak, then the same export (per-class NMS, COCO JSON).

    \b
    oaa, oaa+, am-saliency, dsrg, vit-sm: semantic PNGs only (OUT/semantic), no instances.json; for
    `liid evaluate` (mIoU) and `liid train-deeplab --masks OUT/semantic`.
    """
    ctx = click.get_current_context()
    labeler = get_labeler(method)
    check_method_options(method, ctx)
    summary = labeler.run(method_params(labeler, ctx), out, overwrite)
    if summary is None:  # OUT was up to date
        return
    if not labeler.instances:
        click.echo(f"{out}: semantic maps of {summary['images']} images (no instances: --method {method} "
                   f"defines none)")
        return
    click.echo(f"{out}: {summary['instances']} instances in {summary['images']} images "
               f"({summary['dropped_background']} background, {summary['suppressed_nms']} suppressed by NMS)")


reserve_options(command.params)  # the registry refuses a labeler option that would shadow one of these
