"""The common part of every backbone trunk: its name, stride, channels, input normalisation, frozen BatchNorm."""

from __future__ import annotations

from torch import nn


def freeze_batchnorm(module: nn.Module) -> None:
    """No gradient to the affine parameters of ``module``'s BatchNorm layers."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)


def batchnorm_eval(module: nn.Module) -> None:
    """``module``'s BatchNorm layers to eval mode (running statistics used, never updated)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


class Trunk(nn.Module):
    """Base of the trunks in the backbone table (``liid.models.backbone``).

    ``freeze_bn=True`` keeps BatchNorm layers in eval mode with frozen affine parameters (one-image batches,
    as in the LIID training recipe, give useless batch statistics). Subclasses set ``name``,
    ``out_channels``, ``stride`` and call ``_set_frozen_bn`` at the end of their ``__init__``; the table sets
    ``norm``.
    """

    stride = 32
    name: str
    out_channels: int
    norm = None  # a liid.models.backbone.Normalization, set by build_backbone
    freeze_bn = False

    def late_stages(self) -> tuple[str, ...]:
        """Names (in ``named_modules``) of the modules whose outputs are the stride-16 and stride-32 maps:
        the intermediate feature layers attention-based labelers differentiate (paper 000 eq. 5)."""
        raise NotImplementedError

    def _set_frozen_bn(self, freeze_bn: bool) -> None:
        self.freeze_bn = freeze_bn
        if freeze_bn:
            freeze_batchnorm(self)
        self.train(self.training)

    def train(self, mode: bool = True) -> Trunk:
        super().train(mode)
        if self.freeze_bn:
            batchnorm_eval(self)
        return self
