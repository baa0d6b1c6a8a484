"""Training losses of MPG-SAM 2 for one object's clip (DESIGN §3, §7).

The official MPG-SAM 2 recipe supervises the final masks only (focal + dice + L_sim, Eq. 6).
That is enough when every head starts from SAM 2 weights; a model whose object-score or IoU
head starts untrained also needs SAM 2's own terms (``MultiStepMultiMasksAndIous`` in SAM 2's
training code): a presence loss on the object-score logit and an L1 loss on the predicted IoU.
``ReferringLoss`` computes all five, each weighted (0 switches a term off) by ``LossConfig``.

The -1024 hard replacement: with ``pred_obj_scores`` SAM 2 sets every mask logit of a frame
to ``NO_OBJ_SCORE`` (-1024) where the object-score logit is <= 0. Mask losses give no gradient
on such frames (that is why presence must be supervised); this module does not try to undo the
replacement, it only keeps every term finite there (``binary_cross_entropy_with_logits``, a
clamped focal modulating factor, norms clamped before the square root).

Decisions (the brief left them open):
  * Empty-target frames: focal/dice are computed on ``single_logits`` (the mask SAM 2 returns)
    and they ARE supervised, as in the official MPG-SAM 2 recipe (which supervises every frame
    of the clip), so those frames push the mask to empty. SAM 2's own recipe would zero mask
    losses there (``target_obj`` gating); we follow MPG-SAM 2's. There is no "best candidate" of
    an empty target, so ``multimask_min`` only acts on frames where the target is non-empty.
  * Candidate choice uses ``w_focal * focal + w_dice * dice`` per frame; if both weights are 0
    (focal and dice off, the choice then only matters for the IoU target) it uses focal + dice.
  * The IoU target of the single output (``multimask_min`` off, or M == 1) is the candidate SAM 2
    returned: ``argmax(iou_pred)`` when M > 1 (``MaskDecoder``'s pick in multimask mode),
    candidate 0 when M == 1. Its actual IoU is measured on ``multimask_logits`` of that index.
  * L_sim is computed on ``single_logits`` (the final mask), as the official code does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TERMS = ("focal", "dice", "similarity", "presence", "iou")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms (0 switches a term off) and the focal loss parameters.

    Defaults: the official MPG-SAM 2 weights (2 focal, 5 dice, 2 L_sim) plus SAM 2's presence
    (object score) and IoU weights (1 and 1).
    multimask_min: focal + dice on the best of the M > 1 candidates of a frame instead of the
      single output mask (SAM 2's recipe).
    iou_all: supervise the predicted IoU of all M candidates (SAM 2's ``supervise_all_iou``,
      on in its training configs) instead of only the chosen one. With ``multimask_min``, the
      chosen one is the best candidate, so without ``iou_all`` the IoU head never learns to rank
      the others, and inference (which picks ``argmax`` predicted IoU) returns arbitrary
      candidates: a model trained from scratch that way segmented the wrong thing on held-out
      videos while its training loss looked fine (docs/training_experiments.md).
    prior: weight of an auxiliary BCE on the MPG's mask prior M_p (Eq. 3) against the ground
      truth pooled to the BEiT-3 grid (``prior_loss``). Neither the paper nor the official code
      has it (their prior learns only through SAM 2, from pretrained weights); a model trained
      from scratch gets a direct grounding signal for BEiT-3 and the MPG from it. Default off.
    prior_dice: weight of a soft dice on the same prior and pooled target (``prior_dice_loss``):
      the objects cover a few grid cells, so the BCE alone is mostly about the background;
      the dice is about the target's cells only. Default off.
    words: weight of a bag-of-words loss on BEiT-3's [CLS] token V_cls (``WordPresence``): a
      training-only Linear head must tell, from V_cls alone, which vocabulary pieces the
      command contains. Not in the paper (its BEiT-3 is pretrained on image-text data and its
      [CLS] reads every word already). A BEiT-3 trained from scratch otherwise attends only
      to the words that pay off first (colour, shape) and never learns to read "left" or
      "moving": their embeddings get almost no gradient (docs/training_experiments.md).
      Default off.
    presence_absent_weight: how much a frame whose target is absent counts in the presence BCE,
      against 1 for a frame where it is present (SAM 2 weighs them alike). Absent frames are
      rare (2 % of the synthetic benchmark's target frames), so the term mostly teaches
      "present"; a weight above 1 evens that out. Default 1.
    motion_words: weight of the same bag-of-words loss on the MPG's motion stem
      (``mpg.motion_stem``, which sees pixels only, never the text): its features, averaged
      over the target's cells of every frame after the first (``region_mean``), must tell
      which words the command has. So the stem learns what "moving up" looks like from the
      words alone, before Eq. 3's product with V'_cls has anything to align it with (with both
      sides starting from nothing, the prior stayed at chance on motion). Not in the paper.
      Default off.
    """

    focal: float = 2.0
    dice: float = 5.0
    similarity: float = 2.0
    presence: float = 1.0
    iou: float = 1.0
    multimask_min: bool = True
    iou_all: bool = True
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    prior: float = 0.0
    prior_dice: float = 0.0
    words: float = 0.0
    motion_words: float = 0.0
    presence_absent_weight: float = 1.0

    def __post_init__(self) -> None:
        weights = (*TERMS, "prior", "prior_dice", "words", "motion_words")
        for name in weights:
            w = getattr(self, name)
            if not _is_number(w) or w < 0:
                raise ValueError(f"loss weight {name!r} must be a finite number >= 0, got {w!r}")
        if not any(getattr(self, name) > 0 for name in weights):
            raise ValueError("all loss weights are 0: nothing would be trained")
        for name in ("multimask_min", "iou_all"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name!r} must be a bool, got {getattr(self, name)!r}")
        if not _is_number(self.presence_absent_weight) or self.presence_absent_weight < 0:
            raise ValueError(f"presence_absent_weight must be a finite number >= 0, got {self.presence_absent_weight!r}")
        if not _is_number(self.focal_alpha) or not 0.0 <= self.focal_alpha <= 1.0:
            raise ValueError(f"focal_alpha must be in [0, 1], got {self.focal_alpha!r}")
        if not _is_number(self.focal_gamma) or self.focal_gamma < 0:
            raise ValueError(f"focal_gamma must be a finite number >= 0, got {self.focal_gamma!r}")

    @classmethod
    def from_dict(cls, d: Mapping) -> "LossConfig":
        """Build from a config mapping; an unknown key is an error (a typo must not be ignored)."""
        known = {f.name for f in fields(cls)}
        for key in d:
            if key not in known:
                raise ValueError(f"unknown loss config key {key!r}; known keys: {sorted(known)}")
        return cls(**dict(d))


def _prior_cover(prior: Tensor, target: Tensor) -> Tensor:
    """The fraction of each of the prior's g x g cells [B, T, 1, g, g] that the ground truth
    (target [B, T, S, S]) covers."""
    g = prior.shape[-1]
    return F.adaptive_avg_pool2d(target.float().flatten(0, 1)[:, None], g).reshape(prior.shape)


def prior_loss(prior: Tensor, target: Tensor) -> Tensor:
    """Auxiliary loss on the mask prior M_p of Eq. 3 (see ``LossConfig.prior``): BCE between
    the prior probabilities [B, T, 1, g, g] and the fraction of each grid cell the ground truth
    covers (target [B, T, S, S] average-pooled to g x g), mean over all cells.

    Written out rather than ``F.binary_cross_entropy``: CUDA's bf16 autocast refuses that function
    (it takes probabilities, unsafe in half precision) and stopped ``precision: bf16`` runs at their
    first step on the GPU (session 20). With p clamped to [1e-6, 1 - 1e-6] the logs stay above -14,
    so this equals the library's BCE (which clamps its logs at -100)."""
    p = prior.float().clamp(1e-6, 1 - 1e-6)
    t = _prior_cover(prior, target)
    return -(t * p.log() + (1 - t) * torch.log1p(-p)).mean()


def prior_dice_loss(prior: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """Soft dice between the prior M_p (Eq. 3) and the pooled ground truth of ``prior_loss``,
    per frame, mean over frames. A frame whose target is empty scores 1 - eps / (sum p + eps):
    it pushes the prior to empty. ``eps`` is small because a target covers a few cells: a
    smoothing of 1 would dwarf them and leave the loss nearly flat."""
    p = prior.float().flatten(2)
    c = _prior_cover(prior, target).float().flatten(2)
    dice = (2 * (p * c).sum(-1) + eps) / (p.sum(-1) + c.sum(-1) + eps)
    return (1 - dice).mean()


# ----- elementary terms ---------------------------------------------------------------
def sigmoid_focal_map(logits: Tensor, target: Tensor, alpha: float, gamma: float) -> Tensor:
    """Per-pixel sigmoid focal loss  alpha_t (1 - p_t)^gamma BCE(logits, target).

    1 - p_t = t sigmoid(-x) + (1 - t) sigmoid(x) is formed from sigmoids (exact 0 at -1024
    logits) and clamped to the smallest normal float before the power, so that no gamma gives
    an infinite or NaN gradient there (the clamp passes no gradient below that value)."""
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    one_minus_pt = target * torch.sigmoid(-logits) + (1 - target) * torch.sigmoid(logits)
    modulating = one_minus_pt.clamp_min(torch.finfo(one_minus_pt.dtype).tiny) ** gamma
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return alpha_t * modulating * ce


def dice_loss(probs: Tensor, target: Tensor, dims: tuple[int, ...]) -> Tensor:
    """1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1) over ``dims`` (+1 smoothing both sides)."""
    inter = (probs * target).sum(dims)
    return 1 - (2 * inter + 1) / (probs.sum(dims) + target.sum(dims) + 1)


def mask_iou(pred: Tensor, target: Tensor) -> Tensor:
    """IoU of boolean masks over the last two dims (union clamped to >= 1)."""
    inter = (pred & target).flatten(-2).sum(-1).float()
    union = (pred | target).flatten(-2).sum(-1).float()
    return inter / union.clamp_min(1.0)


class MaskTextSimilarity(nn.Module):
    """L_sim of the paper (Eq. 6) as the official code computes it (DESIGN §7).

    s_t = text2one(text_proj(text_tokens_t)[0]) is ONE scalar per frame (from the first text
    token), and
        L_sim = mean_t ( cos(sigmoid(pred_t), s_t * 1) - cos(gt_t, s_t * 1) )^2
    with 1 the all-ones image of N = H*W pixels. Since s_t * 1 is a constant image,
        cos(x, s_t * 1) = sign(s_t) * |x|_1 / (sqrt(N) |x|_2),
    so what this really measures is a soft area/compactness statistic of the predicted mask
    against the ground truth's (it is 0 for an empty ground truth). sign(s_t) enters both cosines
    and cancels in the square: the loss does not depend on the text at all, and the text
    branch (text2one, text_proj) gets no gradient beyond rounding noise, except where
    |s_t| sqrt(N) falls below the cosine's eps (1e-8) and the loss becomes (s_t / eps)^2 (...).
    The cosine is computed explicitly (dot product over clamped norms, like
    ``F.cosine_similarity``) without materialising the constant image.

    Arguments:
      text_dim: D, BEiT-3 text channels.  dim: C, SAM 2 channels.
      text_proj: the model's D -> C text projection (``aggregator.text_proj``, the released
        ``text_feat_linear``) when the model has one; it is then SHARED and not registered
        here (its parameters belong to the model, so ``self.parameters()`` holds only what
        this module owns and can go to the optimizer without duplicates). Without it this
        module owns an ``nn.Linear(text_dim, dim)``.
    ``text2one`` (C -> 1, the released ``text2one_linear``) is training-only and always owned.
    """

    eps = 1e-8

    def __init__(self, text_dim: int, dim: int, text_proj: nn.Module | None = None) -> None:
        super().__init__()
        self.owns_text_proj = text_proj is None
        if text_proj is None:
            self.own_text_proj = nn.Linear(text_dim, dim)
        else:
            self._shared_text_proj = (text_proj,)  # a tuple keeps nn.Module from registering it
        self.text2one = nn.Linear(dim, 1)

    @property
    def text_proj(self) -> nn.Module:
        return self.own_text_proj if self.owns_text_proj else self._shared_text_proj[0]

    def text_scalar(self, text_tokens: Tensor) -> Tensor:
        """text_tokens [T, L, D] -> s [T] (one scalar per frame, from token 0)."""
        return self.text2one(self.text_proj(text_tokens)[:, 0]).squeeze(-1)

    def cosine_with_constant(self, x: Tensor, s: Tensor) -> Tensor:
        """cos(x_t, s_t * 1) for x [T, H, W], s [T] -> [T], with eps-clamped norms."""
        x = x.flatten(1)
        n = x.shape[1]
        dot = s * x.sum(1)
        x_norm = x.square().sum(1).clamp_min(self.eps**2).sqrt()  # = max(|x|_2, eps), finite gradient at 0
        const_norm = (s.square() * n).clamp_min(self.eps**2).sqrt()  # = max(|s| sqrt(N), eps)
        return dot / (x_norm * const_norm)

    def forward(self, pred_logits: Tensor, target: Tensor, text_tokens: Tensor) -> Tensor:
        """pred_logits [T, H, W] final mask logits, target [T, H, W] 0/1, text_tokens [T, L, D]
        raw BEiT-3 text tokens -> scalar."""
        if pred_logits.dim() != 3 or pred_logits.shape != target.shape:
            raise ValueError(
                f"pred_logits and target must both be [T, H, W], got {tuple(pred_logits.shape)} and {tuple(target.shape)}"
            )
        if text_tokens.dim() != 3 or text_tokens.shape[0] != pred_logits.shape[0]:
            raise ValueError(f"text_tokens must be [T={pred_logits.shape[0]}, L, D], got {tuple(text_tokens.shape)}")
        s = self.text_scalar(text_tokens).float()
        cos_pred = self.cosine_with_constant(torch.sigmoid(pred_logits.float()), s)
        cos_gt = self.cosine_with_constant(target.float(), s)
        return F.mse_loss(cos_pred, cos_gt)


class WordPresence(nn.Module):
    """The ``words`` loss (``LossConfig.words``): a Linear head on V_cls (Eq. 1's [CLS]) predicts
    the set of vocabulary pieces of the command; BCE-with-logits summed over the vocabulary
    (special pieces left out) and averaged over clips and frames. Training only: the head is
    not part of the model.

    Arguments:
      dim: D, BEiT-3 channels.  vocab_size: the text vocabulary.
      ignore_ids: pieces that are no word (<s>, </s>, <pad>, ...), neither targets nor scored.
    """

    def __init__(self, dim: int, vocab_size: int, ignore_ids: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.head = nn.Linear(dim, vocab_size)
        keep = torch.ones(vocab_size)
        keep[[i for i in ignore_ids if 0 <= i < vocab_size]] = 0.0
        self.register_buffer("keep", keep, persistent=False)

    def targets(self, ids: Tensor, padding: Tensor) -> Tensor:
        """[B, L] token ids (True in ``padding`` where there is none) -> [B, V] 0/1."""
        out = torch.zeros(ids.shape[0], self.keep.numel(), device=ids.device)
        out.scatter_(1, ids.masked_fill(padding, 0), (~padding).float())
        return out * self.keep

    def forward(self, cls: Tensor, ids: Tensor, padding: Tensor) -> Tensor:
        """cls [B, T, D], ids / padding [B, L] -> 0-dim loss."""
        logits = self.head(cls.float())
        target = self.targets(ids, padding)[:, None].expand_as(logits)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return (bce * self.keep).sum(-1).mean()


def region_mean(features: Tensor, target: Tensor, first: int = 1) -> tuple[Tensor, Tensor]:
    """Mean of per-cell ``features`` [B, T, N, D] (N = g x g, raster order) over the target's
    cells, weighted by the share of each cell the target ``target`` [B, T, S, S] covers, over
    frames ``first``..T-1 together -> ([B, D], bool [B]: clips where the target covers any
    cell of those frames; the others' rows are zero)."""
    b, t, n, _ = features.shape
    g = int(round(n**0.5))
    if g * g != n:
        raise ValueError(f"{n} cells are not a square grid")
    weight = F.adaptive_avg_pool2d(target[:, first:].float(), g).flatten(2)  # [B, T-first, N]
    total = weight.sum(dim=(1, 2))
    pooled = torch.einsum("btn,btnd->bd", weight, features[:, first:].float())
    return pooled / total.clamp_min(1e-6)[:, None], total > 0


class ReferringLoss(nn.Module):
    """Focal + dice (+ L_sim) on the final masks (official MPG-SAM 2, DESIGN §7) and SAM 2's
    presence and IoU terms, for one object's clip of T frames at SAM 2 input size S.

    focal: sigmoid focal loss of the chosen mask of each frame, mean over all T x S x S pixels,
      divided by the number of frames where the object is present (at least 1).
    dice: one 3-D dice over the clip (+1 smoothing), divided by the same count.
    similarity: ``MaskTextSimilarity`` on the final masks (``single_logits``).
    presence: BCE-with-logits of the object-score logit vs "target non-empty", mean over frames,
      frames with an empty target weighted ``presence_absent_weight``.
    iou: L1 between the predicted IoU and the actual IoU (binarised at logit 0, detached) of the
      chosen candidate (or of all candidates with ``iou_all``), frames with a non-empty target only.
    See the module docstring for the choices on empty-target frames and candidates.

    Arguments:
      config: weights and options.
      similarity: the L_sim module; required when ``config.similarity > 0``.
    """

    def __init__(self, config: LossConfig, similarity: MaskTextSimilarity | None = None,
                 words: WordPresence | None = None, motion_words: WordPresence | None = None) -> None:
        super().__init__()
        if config.similarity > 0 and similarity is None:
            raise ValueError("config.similarity > 0 needs a MaskTextSimilarity module (or set similarity: 0)")
        if config.words > 0 and words is None:
            raise ValueError("config.words > 0 needs a WordPresence module (or set words: 0)")
        if config.motion_words > 0 and motion_words is None:
            raise ValueError("config.motion_words > 0 needs a WordPresence module (or set motion_words: 0)")
        self.config = config
        self.similarity = similarity
        self.words = words
        self.motion_words = motion_words

    def _choose(
        self, multimask: Tensor, single: Tensor, iou_pred: Tensor, target: Tensor, present: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Per frame: the mask logits focal/dice act on [T, S, S] and the candidate index
        whose IoU is supervised [T]."""
        cfg = self.config
        t, m = multimask.shape[:2]
        if m == 1:
            return single[:, 0], torch.zeros(t, dtype=torch.long, device=multimask.device)
        if not cfg.multimask_min:
            return single[:, 0], torch.argmax(iou_pred.detach(), dim=-1)  # MaskDecoder's multimask pick
        with torch.no_grad():
            tgt = target.unsqueeze(1).expand_as(multimask)
            focal = sigmoid_focal_map(multimask, tgt, cfg.focal_alpha, cfg.focal_gamma).flatten(2).mean(-1)
            dice = dice_loss(torch.sigmoid(multimask), tgt, dims=(2, 3))
            wf, wd = (cfg.focal, cfg.dice) if cfg.focal > 0 or cfg.dice > 0 else (1.0, 1.0)
            best = torch.argmin(wf * focal + wd * dice, dim=1)
        rows = torch.arange(t, device=multimask.device)
        chosen = torch.where(present[:, None, None], multimask[rows, best], single[:, 0])
        return chosen, best

    def forward(
        self,
        *,
        multimask_logits: Tensor,
        single_logits: Tensor,
        iou_pred: Tensor,
        object_score_logits: Tensor,
        target: Tensor,
        text_tokens: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """multimask_logits [T, M, S, S], single_logits [T, 1, S, S], iou_pred [T, M],
        object_score_logits [T, 1], target [T, S, S] 0/1, text_tokens [T, L, D] (for L_sim).
        Returns {"focal", "dice", "similarity", "presence", "iou", "total"}, 0-dim tensors;
        a term switched off is 0 and not in "total" (= sum of weight * term)."""
        cfg = self.config
        t, m = multimask_logits.shape[:2] if multimask_logits.dim() == 4 else (-1, -1)
        shapes_ok = (
            t > 0
            and target.dim() == 3
            and target.shape == (t, *multimask_logits.shape[2:])
            and single_logits.shape == (t, 1, *target.shape[1:])
            and iou_pred.shape == (t, m)
            and object_score_logits.shape == (t, 1)
        )
        if not shapes_ok:
            raise ValueError(
                "expected multimask_logits [T, M, S, S], single_logits [T, 1, S, S], iou_pred [T, M], "
                f"object_score_logits [T, 1], target [T, S, S]; got {tuple(multimask_logits.shape)}, "
                f"{tuple(single_logits.shape)}, {tuple(iou_pred.shape)}, {tuple(object_score_logits.shape)}, "
                f"{tuple(target.shape)}"
            )
        if cfg.similarity > 0 and text_tokens is None:
            raise ValueError("the similarity term is on: text_tokens [T, L, D] are needed")

        multimask = multimask_logits.float()
        single = single_logits.float()
        target = target.float()
        present = target.flatten(1).amax(1) > 0  # [T]
        num_present = present.sum().clamp_min(1).float()
        out = {name: multimask.new_zeros(()) for name in TERMS}

        chosen, idx = self._choose(multimask, single, iou_pred, target, present)
        if cfg.focal > 0:
            focal_map = sigmoid_focal_map(chosen, target, cfg.focal_alpha, cfg.focal_gamma)
            out["focal"] = focal_map.mean() / num_present
        if cfg.dice > 0:
            out["dice"] = dice_loss(torch.sigmoid(chosen), target, dims=(0, 1, 2)) / num_present
        if cfg.similarity > 0:
            out["similarity"] = self.similarity(single[:, 0], target, text_tokens)
        if cfg.presence > 0:
            weight = torch.where(present, 1.0, cfg.presence_absent_weight).float()
            out["presence"] = F.binary_cross_entropy_with_logits(object_score_logits.float()[:, 0], present.float(), weight=weight)
        if cfg.iou > 0:
            out["iou"] = self._iou_loss(multimask, iou_pred.float(), target, present, idx)

        total = multimask.new_zeros(())
        for name in TERMS:
            w = getattr(cfg, name)
            if w > 0:
                total = total + w * out[name]
        out["total"] = total
        return out

    def _iou_loss(self, multimask: Tensor, iou_pred: Tensor, target: Tensor, present: Tensor, idx: Tensor) -> Tensor:
        """L1 between predicted and actual IoU (detached) on frames with a non-empty target."""
        with torch.no_grad():
            actual = mask_iou(multimask > 0, target.unsqueeze(1) > 0)  # [T, M]
        if not self.config.iou_all:
            rows = torch.arange(multimask.shape[0], device=multimask.device)
            actual, iou_pred = actual[rows, idx].unsqueeze(1), iou_pred[rows, idx].unsqueeze(1)
        err = (iou_pred - actual).abs()[present]
        if err.numel() == 0:
            return iou_pred.sum() * 0.0  # no present frame: 0, still connected to the graph
        return err.mean()
