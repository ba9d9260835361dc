"""A ViT with one class token per class (MCTformer-V2 style), the network of the ``vit-sm`` labeler (paper 002).

Tokens: ``C`` class tokens, then the ``N = h·w`` patch tokens, plus a learned position embedding. After the
last block and the final LayerNorm:

* class-token logits: each class token is averaged over its embedding dimensions and is the score of its own
  class (paper 002 eq. 7, as in MCTformer);
* patch logits: the patch tokens, laid out on the ``h×w`` grid, go through a convolution with ``C`` outputs
  (1×1 by default; MCTformer-V2 uses 3×3) — that map is the *Original-CAM* (eq. 1) — then a global average
  pool (eq. 9);
* the attention weights of the last ``n_layers`` blocks, averaged over heads, ``[L, B, C+N, C+N]`` (eq. 2).

The blocks are timm's ``Block`` (so a timm DeiT-S state dict loads key for key, see ``load_deit_weights``),
but their attention is computed here: timm's ``Attention.forward`` uses the fused
``scaled_dot_product_attention`` and never returns the weights. ``_attention`` repeats its math step by step
and materialises the softmax only for the blocks whose weights are asked for; the others take the fused path.

timm is a dependency (the EfficientNet-Lite trunks use it too); this module still imports without it and the
constructor raises a one-line LiidError.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from liid.errors import LiidError
from liid.models.checkpoint import FORMAT, load_state_dict_checked, read_weights_file

try:  # optional extra "vit"
    from timm.layers import PatchEmbed, trunc_normal_
    from timm.models.vision_transformer import Block
except ImportError:  # pragma: no cover - exercised only without timm
    PatchEmbed = Block = trunc_normal_ = None

# DeiT-S (Touvron et al. 2021), the backbone of paper 002 and MCTformer.
DEIT_S = {"embed_dim": 384, "depth": 12, "num_heads": 6, "patch_size": 16}
DEIT_S_URL = "https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth"
DEIT_S_FILE = "deit_small_patch16_224-cd65a155.pth"


def deit_weights_path() -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` caches the DeiT-S ImageNet file: ``<hub dir>/checkpoints/``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / DEIT_S_FILE


@dataclass
class ViTOutput:
    """What ``MultiClassTokenViT.forward`` returns.

    ``cls_logits [B, C]`` (eq. 7), ``patch_logits [B, C]`` (eq. 9), ``cams [B, C, h, w]`` the raw Original-CAM
    (eq. 1, before any ReLU), ``attn [L, B, C+N, C+N]`` the head-averaged softmax attention of the last L
    blocks (oldest first), or None when none was asked for.
    """

    cls_logits: torch.Tensor
    patch_logits: torch.Tensor
    cams: torch.Tensor
    attn: torch.Tensor | None


def _attention(attn: nn.Module, x: torch.Tensor, need_weights: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """timm ``Attention.forward`` on ``x [B, T, D]``, also returning the weights ``[B, heads, T, T]`` when asked.

    Same math as timm: qkv projection, optional q/k norm, ``softmax(q·kᵀ·scale)``, attention dropout, value
    mix, optional norm and gate, output projection. With ``need_weights=False`` the fused kernel is used.
    """
    B, T, _ = x.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    attn_dim = getattr(attn, "attn_dim", heads * head_dim)
    gate_layer = getattr(attn, "gate", None)
    gate = gate_layer(x).sigmoid() if gate_layer is not None else None
    q, k, v = attn.qkv(x).reshape(B, T, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    weights = None
    if need_weights:
        weights = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        y = attn.attn_drop(weights) @ v
    else:
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if attn.training else 0.0)
    y = attn.norm(y.transpose(1, 2).reshape(B, T, attn_dim))
    if gate is not None:
        y = y * gate
    return attn.proj_drop(attn.proj(y)), weights


def _block(block: nn.Module, x: torch.Tensor, need_weights: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """timm ``Block.forward`` (pre-norm attention + MLP, layer scale, drop path) with our ``_attention``."""
    y, weights = _attention(block.attn, block.norm1(x), need_weights)
    x = x + block.drop_path1(block.ls1(y))
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return x, weights


def resample_patch_pos(pos: torch.Tensor, grid: tuple[int, int], to: tuple[int, int]) -> torch.Tensor:
    """Patch position embeddings ``[1, h·w, D]`` on ``grid (h, w)`` resampled to ``to (h', w')`` (bicubic, as
    DeiT/MCTformer do for other input sizes); returned unchanged when the grids agree."""
    if tuple(grid) == tuple(to):
        return pos
    D = pos.shape[-1]
    p = pos.reshape(1, grid[0], grid[1], D).permute(0, 3, 1, 2)
    p = F.interpolate(p.float(), size=tuple(to), mode="bicubic", align_corners=False).to(pos.dtype)
    return p.permute(0, 2, 3, 1).reshape(1, to[0] * to[1], D)


class MultiClassTokenViT(nn.Module):
    """ViT with ``num_classes`` class tokens; DeiT-S sizes by default, every size a constructor argument.

    ``img_size`` fixes the stored position-embedding grid (``img_size // patch_size`` a side); other input
    sizes (multiples of ``patch_size``) are accepted and get a bicubically resampled embedding.
    """

    def __init__(self, num_classes: int, img_size: int = 224, patch_size: int = 16, embed_dim: int = 384,
                 depth: int = 12, num_heads: int = 6, mlp_ratio: float = 4.0, head_kernel: int = 1,
                 drop_path: float = 0.0):
        super().__init__()
        if Block is None:
            raise LiidError("the vit-sm network needs timm: pip install timm")
        if num_classes < 1 or depth < 1 or num_heads < 1 or patch_size < 1 or embed_dim % num_heads:
            raise ValueError(f"bad ViT sizes: {num_classes} classes, embed {embed_dim}, depth {depth}, "
                             f"heads {num_heads} (must divide embed), patch {patch_size}")
        if img_size < patch_size or img_size % patch_size:
            raise ValueError(f"img_size {img_size} must be a positive multiple of patch_size {patch_size}")
        if head_kernel < 1 or head_kernel % 2 == 0:
            raise ValueError(f"head_kernel must be odd and >= 1, got {head_kernel}")
        self.num_classes = num_classes
        self.img_size, self.patch_size, self.embed_dim = img_size, patch_size, embed_dim
        self.depth, self.num_heads, self.mlp_ratio, self.head_kernel = depth, num_heads, mlp_ratio, head_kernel
        self.grid = (img_size // patch_size, img_size // patch_size)
        norm = partial(nn.LayerNorm, eps=1e-6)  # DeiT's
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim, strict_img_size=False)
        self.cls_token = nn.Parameter(torch.zeros(1, num_classes, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_classes + self.grid[0] * self.grid[1], embed_dim))
        rates = torch.linspace(0, drop_path, depth).tolist()  # stochastic depth rising with depth, as DeiT
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=r,
                                          norm_layer=norm) for r in rates)
        self.norm = norm(embed_dim)
        self.head = nn.Conv2d(embed_dim, num_classes, head_kernel, padding=head_kernel // 2)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        for m in self.blocks.modules():  # timm's ViT init of the linear layers (LayerNorms keep 1 and 0)
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def backbone_name(self) -> str:
        """The architecture in one word (checked by ``load_checkpoint``), e.g. ``vit-e384-d12-h6-p16``."""
        return f"vit-e{self.embed_dim}-d{self.depth}-h{self.num_heads}-p{self.patch_size}"

    def arch(self) -> dict:
        """The constructor arguments that fix the weights' shapes (stored in checkpoints; drop_path is not)."""
        return {"num_classes": self.num_classes, "img_size": self.img_size, "patch_size": self.patch_size,
                "embed_dim": self.embed_dim, "depth": self.depth, "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio, "head_kernel": self.head_kernel}

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """``[1, C + h·w, D]``: the class tokens' embeddings and the patch ones resampled to ``grid``."""
        C = self.num_classes
        return torch.cat([self.pos_embed[:, :C], resample_patch_pos(self.pos_embed[:, C:], self.grid, grid)], 1)

    def tokens(self, x: torch.Tensor, n_layers: int = 0) -> tuple[torch.Tensor, list[torch.Tensor], tuple[int, int]]:
        """Final normed tokens ``[B, C+N, D]``, the per-head attention ``[B, heads, T, T]`` of the last
        ``n_layers`` blocks, and the patch grid ``(h, w)``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got {tuple(x.shape)}")
        H, W = x.shape[2:]
        p = self.patch_size
        if H % p or W % p or H < p or W < p:
            raise ValueError(f"image size {H}x{W} is not a positive multiple of the patch size {p}")
        if not 0 <= n_layers <= self.depth:
            raise ValueError(f"n_layers must be in 0..{self.depth}, got {n_layers}")
        grid = (H // p, W // p)
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(len(t), -1, -1), t], dim=1) + self.position_embedding(grid)
        weights = []
        for i, block in enumerate(self.blocks):
            t, w = _block(block, t, need_weights=i >= self.depth - n_layers)
            if w is not None:
                weights.append(w)
        return self.norm(t), weights, grid

    def forward(self, x: torch.Tensor, n_layers: int = 0) -> ViTOutput:
        """Logits, Original-CAM and (``n_layers`` > 0) the head-averaged attention of the last ``n_layers`` blocks.

        ``x [B, 3, H, W]`` normalised images, H and W multiples of ``patch_size``. Training needs no attention
        weights (``n_layers=0``: every block takes the fused kernel).
        """
        t, weights, (h, w) = self.tokens(x, n_layers)
        C = self.num_classes
        cls_logits = t[:, :C].mean(dim=-1)  # eq. 7: class token c → score of class c
        fmap = t[:, C:].transpose(1, 2).reshape(len(t), self.embed_dim, h, w)
        cams = self.head(fmap)  # eq. 1: Original-CAM
        patch_logits = cams.mean(dim=(2, 3))  # eq. 9: GAP
        attn = torch.stack([a.mean(dim=1) for a in weights]) if weights else None
        return ViTOutput(cls_logits, patch_logits, cams, attn)


def _deit_state(obj: object, source: Path) -> dict:
    """The ViT state dict inside a weights file: DeiT's ``{"model": ...}``, ``{"state_dict": ...}`` or plain."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        raise LiidError(f"{source}: a LIID checkpoint, not DeiT weights (resume a train-vit run with --resume)")
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise LiidError(f"{source}: not a state dict (found {type(obj).__name__})")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        if not isinstance(state.get(key), torch.Tensor):
            raise LiidError(f"{source}: not a DeiT/ViT state dict (no {key!r})")
    return state


def load_deit_weights(model: MultiClassTokenViT, path: str | os.PathLike | None = None) -> Path:
    """Initialise ``model`` from a timm/DeiT ViT state dict with one class token; returns the file used.

    ``path`` None: the DeiT-S ImageNet file in the torch hub cache (``deit_weights_path()``), never downloaded.
    The single class token is copied to all C class tokens and its position embedding likewise (MCTformer's
    init); the patch position embeddings are resampled bicubically when the file's grid differs from the
    model's; the classifier (``head.*``, ``head_dist.*``) and a distillation token are dropped, our patch
    head keeps its random init. Every other key must fit exactly: a missing file, another embedding size,
    depth or patch size is a one-line LiidError. (The head count is not in a state dict: DeiT-S has 6.)
    """
    if path is None:
        file = deit_weights_path()
        if not file.is_file():
            raise LiidError(f"no DeiT-S ImageNet weights: tried {file} (torch hub cache, {DEIT_S_URL}); copy that "
                            "file there, pass --weights PATH, or --from-scratch for random init")
    else:
        file = Path(path)
        if not file.is_file():
            raise LiidError(f"{file}: weights file not found (--weights PATH, or --from-scratch for random init)")
    src = _deit_state(read_weights_file(file), file)
    C, D = model.num_classes, model.embed_dim
    cls, pos, proj = src["cls_token"], src["pos_embed"], src["patch_embed.proj.weight"]
    if cls.dim() != 3 or cls.shape[-1] != D:
        raise LiidError(f"{file}: embedding size {cls.shape[-1]} in the file, {D} in the model (--embed-dim)")
    if tuple(proj.shape[-2:]) != (model.patch_size, model.patch_size):
        raise LiidError(f"{file}: patch size {proj.shape[-1]} in the file, {model.patch_size} in the model (--patch)")
    depth = len({k.split(".")[1] for k in src if k.startswith("blocks.")})
    if depth != model.depth:
        raise LiidError(f"{file}: {depth} blocks in the file, {model.depth} in the model (--depth)")
    prefix = 1 + int("dist_token" in src)  # DeiT distilled models carry a second prefix token
    n = pos.shape[1] - prefix
    side = math.isqrt(max(n, 0))
    if pos.dim() != 3 or side * side != n or n < 1:
        raise LiidError(f"{file}: pos_embed {list(pos.shape)} is not {prefix} prefix token(s) + a square grid")
    state = {k: v for k, v in src.items()
             if not (k.startswith(("head.", "head_dist.")) or k in ("dist_token", "cls_token", "pos_embed"))}
    state["cls_token"] = cls[:, :1].expand(1, C, D).clone()
    patch_pos = resample_patch_pos(pos[:, prefix:], (side, side), model.grid)
    state["pos_embed"] = torch.cat([pos[:, :1].expand(1, C, D), patch_pos], dim=1).clone()
    own = model.state_dict()
    state["head.weight"], state["head.bias"] = own["head.weight"], own["head.bias"]
    load_state_dict_checked(model, state, file, what=f"ViT ({model.backbone_name})")
    return file
