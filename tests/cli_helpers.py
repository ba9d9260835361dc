"""Helpers shared by the CLI tests: run ``liid`` in-process, check the one-line error rule, and lay out a small
synthetic dataset with its oracle export as detectron2's configs expect it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from liid.cli import main


def invoke(*args):
    """Run ``liid ARGS...`` in-process; str() every argument so paths can be passed as they are."""
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(res, *words: str) -> None:
    """A failed run that printed exactly one ``error: ...`` line containing every word, and no traceback."""
    assert res.exit_code != 0, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, res.stderr
    assert "Traceback" not in res.output
    for w in words:
        assert w in err, err


def oracle_layout(root: Path, images: int, size: int, seed: int) -> Path:
    """ROOT/synthetic (``images`` synthetic images of ``size`` px) and ROOT/synthetic_pseudo, its oracle labels
    (the layout of detection/register.py); the proposals are each GT mask and its upside-down copy."""
    from liid.datasets import open_dataset  # noqa: PLC0415
    from liid.datasets.synthetic import SyntheticConfig, write_synthetic  # noqa: PLC0415
    from liid.proposals.store import masks_to_proposals, write_proposal_store  # noqa: PLC0415

    syn = root / "synthetic"
    write_synthetic(syn, images, seed=seed, config=SyntheticConfig(size=size), progress=False)
    ds = open_dataset(syn)
    meta, props = [], []
    for im in ds.images:
        inst = ds.instances(im.id)
        masks = np.concatenate([inst.masks, inst.masks[:, ::-1, :]])  # the GT and its upside-down copy
        meta.append({"id": im.id, "file_name": im.file.name, "height": im.height, "width": im.width})
        props.append(masks_to_proposals(masks, np.ones(len(masks))))
    write_proposal_store(root / "props", meta, props)
    res = invoke("label", "--method", "oracle", "--dataset", syn, "--proposals", root / "props",
                 "--out", root / "synthetic_pseudo")
    assert res.exit_code == 0, res.output
    return root
