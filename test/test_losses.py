"""Training losses: each term against its definition, candidate choice, switches, the -1024
hard replacement, L_sim's closed form, config strictness, empty-target frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mpg_sam2_ros.training.losses import LossConfig, MaskTextSimilarity, ReferringLoss

S = 8


def only(**weights) -> LossConfig:
    """A config with every weight 0 except the given ones."""
    base = dict(focal=0.0, dice=0.0, similarity=0.0, presence=0.0, iou=0.0)
    base.update(weights)
    return LossConfig(**base)


def clip(t=3, m=1, seed=0, empty=(1,)):
    """Random logits and a random 0/1 target [T, S, S] with the frames in ``empty`` empty."""
    g = torch.Generator().manual_seed(seed)
    multimask = torch.randn(t, m, S, S, generator=g) * 3
    target = (torch.rand(t, S, S, generator=g) > 0.6).float()
    for i in empty:
        target[i] = 0
    return dict(
        multimask_logits=multimask,
        single_logits=multimask[:, :1].clone(),
        iou_pred=torch.rand(t, m, generator=g),
        object_score_logits=torch.randn(t, 1, generator=g),
        target=target,
    )


def focal_by_pixel(x: np.ndarray, y: np.ndarray, alpha=0.25, gamma=2.0) -> np.ndarray:
    """The focal loss written out per pixel (Lin et al.)."""
    p = 1 / (1 + np.exp(-x))
    ce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    p_t = p * y + (1 - p) * (1 - y)
    alpha_t = alpha * y + (1 - alpha) * (1 - y)
    return alpha_t * (1 - p_t) ** gamma * ce


# ----- each term against its definition -------------------------------------------------
def test_focal_matches_per_pixel_formula():
    c = clip(t=3, empty=(1,))  # 2 present frames
    out = ReferringLoss(only(focal=1.0, focal_alpha=0.3, focal_gamma=1.5))(**c)
    x = c["single_logits"][:, 0].double().numpy()
    y = c["target"].double().numpy()
    expected = focal_by_pixel(x, y, alpha=0.3, gamma=1.5).mean() / 2
    assert out["focal"].dim() == 0
    assert out["focal"].item() == pytest.approx(expected, rel=1e-5)


def test_dice_by_hand():
    # logits 0 -> p = 0.5 everywhere; one target pixel of 4:
    # sum(p t) = 0.5, sum(p) = 2, sum(t) = 1 -> 1 - (2 * 0.5 + 1) / (2 + 1 + 1) = 0.5
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    out = ReferringLoss(only(dice=1.0))(
        multimask_logits=logits, single_logits=logits, iou_pred=torch.zeros(1, 1),
        object_score_logits=torch.zeros(1, 1), target=target,
    )
    assert out["dice"].item() == pytest.approx(0.5)


def test_dice_is_one_3d_dice_over_the_clip_per_present_frame():
    c = clip(t=4, empty=(0, 2))  # 2 present frames
    out = ReferringLoss(only(dice=1.0))(**c)
    p = torch.sigmoid(c["single_logits"][:, 0]).double().numpy()
    y = c["target"].double().numpy()
    inter, sp, st = 0.0, 0.0, 0.0
    for t in range(4):
        for i in range(S):
            for j in range(S):
                inter += p[t, i, j] * y[t, i, j]
                sp += p[t, i, j]
                st += y[t, i, j]
    expected = (1 - (2 * inter + 1) / (sp + st + 1)) / 2
    assert out["dice"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("iou_all", [False, True])
def test_iou_term_against_numpy_iou(iou_all):
    c = clip(t=3, m=3, seed=3, empty=(2,))
    cfg = only(iou=1.0, iou_all=iou_all, multimask_min=False)
    out = ReferringLoss(cfg)(**c)
    masks = c["multimask_logits"].numpy() > 0
    y = c["target"].numpy() > 0
    pred = c["iou_pred"].numpy()
    errs = []
    for t in range(2):  # frame 2 is empty: skipped
        ms = range(3) if iou_all else [int(np.argmax(pred[t]))]  # SAM 2 returns argmax predicted IoU
        for m in ms:
            iou = np.logical_and(masks[t, m], y[t]).sum() / np.logical_or(masks[t, m], y[t]).sum()
            errs.append(abs(pred[t, m] - iou))
    assert out["iou"].item() == pytest.approx(float(np.mean(errs)), rel=1e-5)


def test_presence_is_bce_vs_target_non_empty():
    c = clip(t=4, empty=(1, 3))
    out = ReferringLoss(only(presence=1.0))(**c)
    s = c["object_score_logits"][:, 0].double().numpy()
    y = np.array([1.0, 0.0, 1.0, 0.0])
    per_frame = -(y * np.log(1 / (1 + np.exp(-s))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-s))))
    assert out["presence"].item() == pytest.approx(np.mean(per_frame), rel=1e-5)
    # absent frames weighted 7: each of them counts 7 times in the mean over the 4 frames
    out = ReferringLoss(only(presence=1.0, presence_absent_weight=7.0))(**c)
    assert out["presence"].item() == pytest.approx(np.mean(per_frame * np.where(y > 0, 1.0, 7.0)), rel=1e-5)
    with pytest.raises(ValueError, match="presence_absent_weight"):
        LossConfig(presence_absent_weight=-1.0)


# ----- L_sim --------------------------------------------------------------------------------
def test_similarity_cosine_matches_explicit_constant_image_and_closed_form():
    torch.manual_seed(0)
    sim = MaskTextSimilarity(text_dim=6, dim=4)
    x = torch.rand(3, S, S)
    x[2] = 0  # empty ground truth -> 0
    s = torch.tensor([0.7, -2.0, 1.3])
    got = sim.cosine_with_constant(x, s)
    explicit = F.cosine_similarity(x.flatten(1), s[:, None] * torch.ones(3, S * S), dim=1)
    n = S * S
    closed = torch.sign(s) * x.flatten(1).abs().sum(1) / (math.sqrt(n) * x.flatten(1).norm(dim=1).clamp_min(1e-30))
    closed[2] = 0
    torch.testing.assert_close(got, explicit)
    torch.testing.assert_close(got, closed)
    assert got[2].item() == 0.0


def test_similarity_forward_as_coded():
    torch.manual_seed(1)
    sim = MaskTextSimilarity(text_dim=6, dim=4)
    pred = torch.randn(3, S, S)
    gt = (torch.rand(3, S, S) > 0.5).float()
    tokens = torch.randn(3, 5, 6)
    s = sim.text2one(sim.text_proj(tokens)[:, 0])[:, 0]
    ones = torch.ones(3, S * S)
    a = F.cosine_similarity(torch.sigmoid(pred).flatten(1), s[:, None] * ones, dim=1)
    b = F.cosine_similarity(gt.flatten(1), s[:, None] * ones, dim=1)
    torch.testing.assert_close(sim(pred, gt, tokens), ((a - b) ** 2).mean())
    # what it really measures: the text scalar's sign cancels, the loss does not see the text
    with torch.no_grad():
        sim.text2one.weight.neg_()
        sim.text2one.bias.neg_()
    torch.testing.assert_close(sim(pred, gt, tokens), ((a - b) ** 2).mean())


def test_similarity_gradient_reaches_text2one():
    torch.manual_seed(2)
    sim = MaskTextSimilarity(text_dim=6, dim=4)
    pred = torch.randn(2, S, S, requires_grad=True)
    gt = (torch.rand(2, S, S) > 0.5).float()
    tokens = torch.randn(2, 5, 6)
    sim(pred, gt, tokens).backward()
    # connected to the graph (the optimizer and DDP see it), but ~0 as DESIGN §7 says
    for p in (*sim.text2one.parameters(), *sim.text_proj.parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert sim.text2one.weight.grad.abs().max() < 1e-2 * pred.grad.abs().max()
    assert pred.grad.abs().sum() > 0
    # below the cosine's eps (|s| sqrt(N) < 1e-8) the loss does depend on s: real gradient
    sim.zero_grad()
    with torch.no_grad():
        sim.text2one.weight.zero_()
        sim.text2one.bias.fill_(1e-11)
    sim(pred.detach(), gt, tokens).backward()
    assert sim.text2one.bias.grad.abs().item() > 0


def test_similarity_shares_the_models_text_proj_without_owning_it():
    proj = nn.Linear(6, 4)
    sim = MaskTextSimilarity(text_dim=6, dim=4, text_proj=proj)
    assert sim.text_proj is proj
    own = {id(p) for p in sim.parameters()}
    assert own == {id(p) for p in sim.text2one.parameters()}
    assert set(sim.state_dict()) == {"text2one.weight", "text2one.bias"}
    assert len(list(MaskTextSimilarity(text_dim=6, dim=4).parameters())) == 4


def test_referring_loss_similarity_uses_the_final_mask():
    torch.manual_seed(3)
    sim = MaskTextSimilarity(text_dim=6, dim=4)
    c = clip(t=2, m=3, empty=())
    tokens = torch.randn(2, 5, 6)
    out = ReferringLoss(only(similarity=1.0), similarity=sim)(**c, text_tokens=tokens)
    torch.testing.assert_close(out["similarity"], sim(c["single_logits"][:, 0], c["target"], tokens))
    with pytest.raises(ValueError, match="text_tokens"):
        ReferringLoss(only(similarity=1.0), similarity=sim)(**c)
    with pytest.raises(ValueError, match="MaskTextSimilarity"):
        ReferringLoss(only(similarity=1.0))


# ----- candidate choice -----------------------------------------------------------------------
def _good_bad_clip():
    target = torch.zeros(2, S, S)
    target[0, 2:6, 1:5] = 1  # frame 1 empty
    good = (target * 2 - 1) * 8  # +8 inside, -8 outside
    bad = -good
    mediocre = torch.zeros_like(good)
    multimask = torch.stack([bad, mediocre, good], dim=1).requires_grad_(True)
    single = torch.full((2, 1, S, S), 5.0)  # says "everywhere" on both frames
    return multimask, single, target


def test_multimask_min_picks_the_better_candidate():
    multimask, single, target = _good_bad_clip()
    kw = dict(iou_pred=torch.tensor([[0.8, 0.5, 0.3], [0.8, 0.5, 0.3]]), object_score_logits=torch.zeros(2, 1), target=target)
    cfg = only(focal=2.0, dice=5.0, iou=1.0, iou_all=False)  # the chosen candidate's IoU only
    out = ReferringLoss(cfg)(multimask_logits=multimask, single_logits=single, **kw)
    # expected: the good candidate on frame 0; the single output on the empty frame 1
    chosen = torch.stack([multimask[0, 2], single[1, 0]])[:, None].detach()
    ref = ReferringLoss(only(focal=2.0, dice=5.0))(
        multimask_logits=chosen, single_logits=chosen, iou_pred=torch.zeros(2, 1),
        object_score_logits=torch.zeros(2, 1), target=target,
    )
    torch.testing.assert_close(out["focal"], ref["focal"])
    torch.testing.assert_close(out["dice"], ref["dice"])
    # IoU target of the chosen (good, IoU 1) candidate: |0.3 - 1|
    assert out["iou"].item() == pytest.approx(0.7)
    out["total"].backward()
    g = multimask.grad
    assert g[0, 2].abs().sum() > 0 and g[0, 0].abs().sum() == 0 and g[0, 1].abs().sum() == 0
    assert g[1].abs().sum() == 0  # empty frame: the single output is supervised, not the candidates

    # switched off: the single output everywhere (worse), IoU of SAM 2's pick (argmax -> bad, IoU 0)
    off = ReferringLoss(only(focal=2.0, dice=5.0, iou=1.0, multimask_min=False, iou_all=False))(
        multimask_logits=multimask.detach(), single_logits=single, **kw
    )
    assert off["focal"] > out["focal"] and off["dice"] > out["dice"]
    assert off["iou"].item() == pytest.approx(0.8)  # |0.8 - 0|


# ----- switches --------------------------------------------------------------------------------
def test_switched_off_terms_are_zero_and_out_of_total():
    c = clip(t=3, m=3, seed=5)
    full = ReferringLoss(only(focal=2.0, dice=5.0, presence=1.0, iou=1.0))(**c)
    part = ReferringLoss(only(dice=5.0, presence=1.0))(**c)
    assert set(part) == {"focal", "dice", "similarity", "presence", "iou", "total"}
    for name in ("focal", "similarity", "iou"):
        assert part[name].dim() == 0 and part[name].item() == 0.0
    assert full["focal"].item() > 0 and full["iou"].item() > 0
    torch.testing.assert_close(part["total"], 5.0 * part["dice"] + part["presence"])
    torch.testing.assert_close(full["total"], 2 * full["focal"] + 5 * full["dice"] + full["presence"] + full["iou"])


def test_config_from_dict_is_strict():
    assert LossConfig.from_dict({"focal": 1, "iou_all": True}) == LossConfig(focal=1, iou_all=True)
    with pytest.raises(ValueError, match="dcie"):
        LossConfig.from_dict({"focal": 1.0, "dcie": 5.0})
    with pytest.raises(ValueError, match="dice"):
        LossConfig(dice=-1.0)
    with pytest.raises(ValueError, match="all loss weights"):
        only()


# ----- the -1024 hard replacement ----------------------------------------------------------------
@pytest.mark.parametrize("gamma", [2.0, 0.5, 0.0])
def test_no_object_logits_give_finite_losses_and_gradients(gamma):
    torch.manual_seed(4)
    t, m = 3, 3
    raw = torch.randn(t, m, S, S, requires_grad=True)
    score = torch.tensor([[2.0], [-1.0], [-3.0]], requires_grad=True)
    iou_pred = torch.rand(t, m, requires_grad=True)
    target = (torch.rand(t, S, S) > 0.5).float()
    target[2] = 0
    # as SAM 2's heads: hard replacement by NO_OBJ_SCORE where the score says "absent"
    multimask = torch.where(score[:, :, None, None] > 0, raw, torch.tensor(-1024.0))
    leaf = torch.full((t, 1, S, S), -1024.0, requires_grad=True)  # the raw -1024 as a leaf too
    sim = MaskTextSimilarity(text_dim=6, dim=4)
    tokens = torch.randn(t, 5, 6)
    total = 0.0
    # multimask_min off for the leaf, so that the -1024 leaf is what focal/dice see on every frame
    for single, multimask_min in ((multimask[:, :1], True), (leaf, False)):
        loss = ReferringLoss(LossConfig(focal_gamma=gamma, multimask_min=multimask_min), similarity=sim)
        out = loss(multimask_logits=multimask, single_logits=single, iou_pred=iou_pred,
                   object_score_logits=score, target=target, text_tokens=tokens)
        assert all(torch.isfinite(v) for v in out.values()), out
        total = total + out["total"]
    total.backward()
    for p in (raw, score, iou_pred, leaf, *sim.parameters()):
        assert torch.isfinite(p.grad).all()
    assert leaf.grad.abs().sum() > 0  # the -1024 logits of the present frames are still pushed up
    assert raw.grad[1:].abs().sum() == 0  # replaced frames: mask losses give no gradient ...
    assert score.grad[1:].abs().sum() > 0  # ... which is why presence is supervised


# ----- empty-target frames --------------------------------------------------------------------------
def test_empty_target_frames_presence_pushes_down_and_iou_skips_them():
    c = clip(t=3, m=3, seed=6, empty=(1,))
    score = torch.zeros(3, 1, requires_grad=True)
    iou_pred = c["iou_pred"].clone().requires_grad_(True)
    c.update(object_score_logits=score, iou_pred=iou_pred)
    out = ReferringLoss(only(presence=1.0, iou=1.0, iou_all=True))(**c)
    out["total"].backward()
    assert score.grad[1, 0] > 0  # gradient descent lowers the score of the empty frame
    assert score.grad[0, 0] < 0 and score.grad[2, 0] < 0  # and raises it where the object is
    assert iou_pred.grad[1].abs().sum() == 0 and iou_pred.grad[0].abs().sum() > 0
    # changing the empty frame's predicted IoU changes nothing
    c2 = dict(c, iou_pred=c["iou_pred"].detach().clone())
    c2["iou_pred"][1] = 0.123
    torch.testing.assert_close(ReferringLoss(only(iou=1.0, iou_all=True))(**c2)["iou"], out["iou"].detach())


def test_all_empty_clip_is_finite_and_focal_dice_push_to_empty():
    c = clip(t=2, m=3, seed=7, empty=(0, 1))
    single = c["single_logits"].clone().requires_grad_(True)
    c["single_logits"] = single
    out = ReferringLoss(only(focal=2.0, dice=5.0, iou=1.0))(**c)
    assert out["iou"].item() == 0.0 and torch.isfinite(out["total"])
    out["total"].backward()
    assert (single.grad >= 0).all() and single.grad.abs().sum() > 0  # descent lowers every logit


def test_shape_mismatch_is_an_error():
    c = clip(t=2, m=3)
    c["target"] = c["target"][:1]
    with pytest.raises(ValueError, match="expected"):
        ReferringLoss(LossConfig(similarity=0.0))(**c)
    c = clip(t=2, m=3)
    c["multimask_logits"] = c["multimask_logits"][0]
    with pytest.raises(ValueError, match="expected"):
        ReferringLoss(LossConfig(similarity=0.0))(**c)
