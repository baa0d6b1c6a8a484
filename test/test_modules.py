"""Shapes and equations of each module (paper Eqs. 1-5) and the ablation switches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mpg_sam2_ros.core.modeling import build_model
from mpg_sam2_ros.core.modeling.aggregator import GlobalHistoricalAggregator, space_to_depth
from mpg_sam2_ros.core.modeling.attention import AttentionFFNBlock
from mpg_sam2_ros.core.modeling.mask_prior import MaskPriorGenerator

from conftest import random_frames


def test_encoders_shapes(small_model, tokenizer):
    m = small_model
    sam, mm = random_frames(m, 2)
    with torch.no_grad():
        feats = m.encode_image(sam)
        ids, pad = tokenizer.encode_batch(["the red mug on the left", "the dog"])
        out = m.encode_multimodal(mm, ids, pad)
    assert [tuple(f.shape) for f in feats.vision_feats][-1] == (16 * 16, 2, m.hidden_dim)
    assert feats.feat_sizes == [(64, 64), (32, 32), (16, 16)]
    d, g = m.config.beit3.embed_dim, m.config.beit3.grid_size
    # Eq. 1: [CLS] + N_v patches + L text tokens
    assert out.cls.shape == (2, d) and out.patches.shape == (2, g * g, d) and out.text.shape == (2, ids.shape[1], d)
    assert out.text_padding[1].any() and not out.text_padding[0].any()


def _attention_ffn_reference(block: AttentionFFNBlock, q, kv, q_pos=None, kv_pos=None):
    """Post-norm attention + FFN written out: LN2(y + W2 relu(W1 y)), y = LN1(q + softmax(QK^T/sqrt(d)) V)."""
    attn = block.attn
    e, h = attn.embed_dim, attn.num_heads
    wq, wk, wv = attn.in_proj_weight.split(e)
    bq, bk, bv = attn.in_proj_bias.split(e)
    qq = (q if q_pos is None else q + q_pos) @ wq.T + bq
    kk = (kv if kv_pos is None else kv + kv_pos) @ wk.T + bk
    vv = kv @ wv.T + bv

    def heads(x):  # [S, B, E] -> [B, h, S, E/h]
        return x.reshape(x.shape[0], x.shape[1], h, e // h).permute(1, 2, 0, 3)

    w = torch.softmax(heads(qq) @ heads(kk).transpose(-1, -2) / (e // h) ** 0.5, dim=-1)
    o = (w @ heads(vv)).permute(2, 0, 1, 3).reshape(q.shape[0], q.shape[1], e)
    y = F.layer_norm(q + attn.out_proj(o), (e,), block.norm1.weight, block.norm1.bias)
    f = block.linear2(torch.relu(block.linear1(y)))
    return F.layer_norm(y + f, (e,), block.norm2.weight, block.norm2.bias)


def test_attention_block_equation():
    torch.manual_seed(0)
    block = AttentionFFNBlock(dim=16, num_heads=4, ffn_dim=32).eval()
    q, kv = torch.randn(5, 2, 16), torch.randn(7, 2, 16)
    qp, kp = torch.randn(5, 2, 16), torch.randn(7, 2, 16)
    with torch.no_grad():
        torch.testing.assert_close(block(q, kv, query_pos=qp, context_pos=kp), _attention_ffn_reference(block, q, kv, qp, kp))
        torch.testing.assert_close(block(q), _attention_ffn_reference(block, q, q))


def test_mask_prior_generator_equations():
    """Eq. 2 and Eq. 3 recomputed from the module's weights."""
    torch.manual_seed(0)
    b, t, g, d, c = 2, 3, 4, 16, 8
    mpg = MaskPriorGenerator(embed_dim=d, out_dim=c, num_heads=2, ffn_dim=32).eval()
    patches, cls = torch.randn(b, t, g * g, d), torch.randn(b, t, d)
    with torch.no_grad():
        out = mpg(patches, cls)
        tokens = patches.reshape(b, t * g * g, d).transpose(0, 1)
        v_prime = _attention_ffn_reference(mpg.spatiotemporal, tokens, tokens).transpose(0, 1)  # Eq. 2, line 1
        att = mpg.cls_attention(cls.transpose(0, 1), v_prime.transpose(0, 1), v_prime.transpose(0, 1))[0].transpose(0, 1)
        cls_prime = cls * att                                                                   # Eq. 2, line 2
        product = v_prime.reshape(b, t, g * g, d) * mpg.cls_proj(cls_prime)[:, :, None]          # V' . V'_cls
        prior = torch.sigmoid(mpg.mask_head(product)).reshape(b, t, 1, g, g)                     # Eq. 3, M_p
        pe = mpg.temporal_encoding(torch.arange(t))
        v_g = mpg.global_proj(product) + pe[None, :, None]                                        # Eq. 3, V_g
    torch.testing.assert_close(out.prior, prior)
    torch.testing.assert_close(out.global_feature, v_g)
    assert ((out.prior > 0) & (out.prior < 1)).all()
    # spatiotemporal: frame 0's prior depends on frame 2's patches (global context)
    changed = patches.clone()
    changed[:, 2] += 1.0
    with torch.no_grad():
        assert not torch.allclose(mpg(changed, cls).prior[:, 0], out.prior[:, 0])


def test_mask_prior_switches():
    torch.manual_seed(0)
    patches, cls = torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16)
    plain = MaskPriorGenerator(embed_dim=16, out_dim=8, num_heads=2, self_attention=False, cross_attention=False).eval()
    with torch.no_grad():
        out = plain(patches, cls)
        changed = patches.clone()
        changed[:, 2] += 1.0
        # without S_si and S_ci frames are independent
        torch.testing.assert_close(plain(changed, cls).prior[:, 0], out.prior[:, 0])
        expected = torch.sigmoid(plain.mask_head(patches * plain.cls_proj(cls)[:, :, None])).reshape(1, 3, 1, 4, 4)
        torch.testing.assert_close(out.prior, expected)
    vanilla = MaskPriorGenerator(embed_dim=16, out_dim=8, num_heads=2, global_feature="vanilla", produce_prior=False).eval()
    with torch.no_grad():
        out = vanilla(patches, cls)
        assert out.prior is None
        torch.testing.assert_close(out.global_feature, vanilla.global_proj(patches) + vanilla.temporal_encoding(torch.arange(3))[None, :, None])


def test_space_to_depth_matches_reference_order():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    ref = x.view(2, 3, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(2, 12, 2, 2).flatten(2).transpose(1, 2)
    torch.testing.assert_close(space_to_depth(x, 2), ref)


def test_aggregator_equations():
    torch.manual_seed(0)
    c, d = 16, 24
    agg = GlobalHistoricalAggregator(dim=c, text_dim=d, num_heads=2, ffn_dim=32, patch_size=2).eval()
    b, t, g = 2, 3, 4
    v_g = torch.randn(b, t, g * g, c)
    with torch.no_grad():
        comp = agg.compress_global(v_g)
        assert comp.shape == (b, t * (g // 2) ** 2, c)
        grid = v_g.reshape(b * t, g, g, c).permute(0, 3, 1, 2)
        torch.testing.assert_close(comp, agg.patch_proj(space_to_depth(grid, 2)).reshape(b, -1, c))
        # Eq. 4: pixel level, positional encoding on the queries only
        feat, pos = torch.randn(b, c, 4, 4), torch.randn(1, c, 4, 4)
        unified = torch.cat([comp, agg.text_proj(torch.randn(b, 5, d))], dim=1)
        fused = agg.fuse_pixels(feat, pos, unified)
        q = feat.flatten(2).permute(2, 0, 1)
        qp = pos.flatten(2).permute(2, 0, 1).expand(-1, b, -1)
        ref = _attention_ffn_reference(agg.pixel_layers[0], q, unified.transpose(0, 1), q_pos=qp)
        torch.testing.assert_close(fused, ref.permute(1, 2, 0).reshape(b, c, 4, 4))
        # Eq. 5: global then local (history keys carry the temporal encoding)
        tokens, hist, hist_pos = torch.randn(b, 4, c), torch.randn(b, 6, c), torch.randn(b, 6, c)
        out = agg.fuse_object_tokens(tokens, v_g.reshape(b, -1, c), hist, hist_pos)
        t_mg = _attention_ffn_reference(agg.object_global_layers[0], tokens.transpose(0, 1), v_g.reshape(b, -1, c).transpose(0, 1))
        t_mgl = _attention_ffn_reference(agg.object_local_layers[0], t_mg, hist.transpose(0, 1), kv_pos=hist_pos.transpose(0, 1))
        torch.testing.assert_close(out, t_mgl.transpose(0, 1))
        # no history (first frame): only the global stage
        torch.testing.assert_close(agg.fuse_object_tokens(tokens, v_g.reshape(b, -1, c), None, None), t_mg.transpose(0, 1))


@pytest.mark.parametrize(
    "overrides, check",
    [
        (["mpg.enabled=false"], lambda m: m.mask_prior.mask_head is None),
        (["mpg.spatiotemporal_self_attention=false"], lambda m: m.mask_prior.spatiotemporal is None),
        (["mpg.cross_modal_interaction=false"], lambda m: m.mask_prior.cls_attention is None),
        (["mpg.global_feature=vanilla"], lambda m: m.mask_prior.global_feature_kind == "vanilla"),
        (["hga.pixel_global=false", "hga.object_global=false", "hga.object_local=false"], lambda m: m.aggregator is None),
        (["hga.pixel_global=false"], lambda m: m.aggregator.pixel_layers is None and m.aggregator.object_global_layers is not None),
        (["hga.object_global=false"], lambda m: m.aggregator.object_global_layers is None),
        (["hga.object_local=false"], lambda m: m.aggregator.object_local_layers is None),
        (["hga.num_pixel_layers=2", "hga.num_object_layers=3"],
         lambda m: len(m.aggregator.pixel_layers) == 2 and len(m.aggregator.object_local_layers) == 3),
        (["hga.patch_size=4"], lambda m: m.aggregator.patch_proj.in_features == 16 * m.hidden_dim),
        (["hga.patch_size=1"], lambda m: m.aggregator.patch_proj.in_features == m.hidden_dim),
        (["sparse_prompt=false"], lambda m: m.sparse_prompt is None),
    ],
)
def test_ablation_switches_build_and_run(small_cfg, tokenizer, overrides, check):
    from mpg_sam2_ros.core.inference.offline import OfflineRunner
    import numpy as np

    torch.manual_seed(0)
    model = build_model(small_cfg.with_overrides(overrides)).eval()
    assert check(model)
    frames = [np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8) for i in range(3)]
    res = OfflineRunner(model, tokenizer).run(frames, ["the red ball"])
    assert res.masks.shape == (1, 3, 48, 64) and res.scores.shape == (1, 3)


def test_default_switches_match_paper(small_cfg):
    from mpg_sam2_ros.core.config import load_model_config

    for name in ("mpg_sam2_l", "mpg_sam2_tiny"):
        cfg = load_model_config(name)
        assert cfg.mpg.enabled and cfg.mpg.spatiotemporal_self_attention and cfg.mpg.cross_modal_interaction
        assert cfg.mpg.global_feature == "masked" and cfg.sparse_prompt
        assert (cfg.hga.pixel_global, cfg.hga.object_global, cfg.hga.object_local) == (True, True, True)
        assert (cfg.hga.num_pixel_layers, cfg.hga.num_object_layers, cfg.hga.patch_size) == (1, 1, 2)
        assert cfg.sam2.overrides["use_mask_input_as_output_without_sam"] is False


def test_patch_size_4_on_a_14x14_grid_pads_to_16():
    """Paper Tab. 4 uses p_g = 4 on BEiT-3's 14 x 14 grid: zero-padded to 16 x 16 -> 16 tokens."""
    torch.manual_seed(0)
    c = 8
    agg = GlobalHistoricalAggregator(dim=c, text_dim=c, num_heads=2, ffn_dim=16, patch_size=4).eval()
    v_g = torch.randn(2, 3, 196, c)
    out = agg.compress_global(v_g)
    assert out.shape == (2, 3 * 16, c)
    grid = torch.nn.functional.pad(v_g.reshape(6, 14, 14, c).permute(0, 3, 1, 2), (0, 2, 0, 2))
    # the first token is the top-left 4 x 4 block, in the released channel order
    block = grid[0, :, :4, :4].reshape(c, 16).reshape(-1)
    assert torch.allclose(out[0, 0], agg.patch_proj(block), atol=1e-6)


def test_relative_time_orders_the_frames_and_keeps_the_streaming_cache_exact():
    """``mpg.relative_time``: Eq. 2's keys carry their frame offset from the query's frame, so
    the order of the frames matters (the paper's Eq. 2 treats them as a set), and a row computed
    for the newest frame against its window equals the same frame's row inside a causal clip
    that starts anywhere: what the engine caches never has to be recomputed."""
    torch.manual_seed(0)
    d, n = 16, 9
    patches = torch.randn(2, 7, n, d)
    plain = MaskPriorGenerator(embed_dim=d, out_dim=8, num_heads=2, ffn_dim=32).eval()
    timed = MaskPriorGenerator(embed_dim=d, out_dim=8, num_heads=2, ffn_dim=32, relative_time=True).eval()
    timed.load_state_dict(plain.state_dict())  # the option adds no weights
    with torch.no_grad():
        reverse = lambda m: m.contextualise(patches.flip(1)).flip(1)  # noqa: E731
        torch.testing.assert_close(reverse(plain), plain.contextualise(patches))
        assert not torch.allclose(reverse(timed), timed.contextualise(patches), atol=1e-3)

        full = timed.contextualise(patches, causal=True)
        for t in range(7):  # the engine: the newest frame against the window that ends with it
            torch.testing.assert_close(timed.contextualise(patches[:, t : t + 1], patches[:, : t + 1])[:, 0], full[:, t])
        late = timed.contextualise(patches[:, 2:], causal=True)  # a window that slid by two frames
        torch.testing.assert_close(timed.contextualise(patches[:, 6:7], patches[:, 2:7])[:, 0], late[:, -1])

        # the equation: frame t's queries get the encoding of offset 0, frame s's keys that of s - t
        t = 4
        pe = timed.temporal_encoding(torch.arange(7) - t, d)
        block = timed.spatiotemporal
        kv = patches.reshape(2, 7 * n, d).transpose(0, 1)
        q = patches[:, t].transpose(0, 1)
        attended = block.attn(q + timed.temporal_encoding(torch.zeros(1), d), kv + pe.repeat_interleave(n, 0)[:, None], kv,
                              need_weights=False)[0]
        x = block.norm1(q + attended)
        expected = block.norm2(x + block.linear2(torch.relu(block.linear1(x))))
        torch.testing.assert_close(timed.contextualise(patches)[:, t], expected.transpose(0, 1))


@pytest.mark.parametrize("relative_time", [False, True], ids=["paper", "relative_time"])
def test_frame_difference_adds_each_frames_change_and_keeps_the_streaming_cache_exact(relative_time):
    """``mpg.frame_difference``: before Eq. 2 every frame's patches get ``L(V_t - V_{t-1})``
    (zero for the window's first frame). L starts at zero, so the option changes nothing until
    trained; the newest frame's row against its window equals its row in a causal clip."""
    torch.manual_seed(0)
    d, n = 16, 9
    patches = torch.randn(2, 6, n, d)
    kw = dict(embed_dim=d, out_dim=8, num_heads=2, ffn_dim=32, relative_time=relative_time)
    plain = MaskPriorGenerator(**kw).eval()
    moving = MaskPriorGenerator(**kw, frame_difference=True).eval()
    missing = moving.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["motion_proj.bias", "motion_proj.weight"]
    with torch.no_grad():
        torch.testing.assert_close(moving.contextualise(patches, causal=True), plain.contextualise(patches, causal=True))
        torch.nn.init.normal_(moving.motion_proj.weight, std=0.3)
        torch.nn.init.normal_(moving.motion_proj.bias, std=0.3)

        # the equation: the plain Eq. 2 on V_t + L(V_t - V_{t-1}), the first frame's change zero
        previous = torch.cat([patches[:, :1], patches[:, :-1]], dim=1)
        moved = patches + moving.motion_proj(patches - previous)
        torch.testing.assert_close(moving.contextualise(patches, causal=True), plain.contextualise(moved, causal=True))
        still = patches[:, :1].expand(-1, 6, -1, -1)  # a frame that does not change gets L's bias only
        torch.testing.assert_close(moving.contextualise(still, causal=True),
                                   plain.contextualise(still + moving.motion_proj.bias, causal=True))

        full = moving.contextualise(patches, causal=True)
        for t in range(6):  # the engine: the newest frame against the window that ends with it
            torch.testing.assert_close(moving.contextualise(patches[:, t : t + 1], patches[:, : t + 1])[:, 0], full[:, t])
        late = moving.contextualise(patches[:, 2:], causal=True)  # a window that slid by two frames
        torch.testing.assert_close(moving.contextualise(patches[:, 5:6], patches[:, 2:6])[:, 0], late[:, -1])
        with pytest.raises(ValueError, match="do not fit"):
            moving.contextualise(patches[:, :3], patches[:, :2])


def test_motion_stem_reads_the_change_of_each_patch_and_is_silent_without_a_previous_frame():
    """``mpg.motion_stem``: per BEiT-3 patch, (I_t, dI, dI * dI/dx, dI * dI/dy) -> conv -> GELU -> 1x1 conv,
    added to the patches by ``encode_multimodal``; zero at start, zero for a row whose previous
    frame is itself, and local: a change inside one patch moves only that patch's row."""
    from mpg_sam2_ros.core.config import load_model_config

    torch.manual_seed(0)
    model = build_model(load_model_config("cpu_small", ["mpg.motion_stem=8"])).eval()
    stem, m = model.mask_prior.motion_stem, model.config.beit3.img_size
    p = model.config.beit3.patch_size
    images, previous = torch.randn(2, 3, m, m), torch.randn(2, 3, m, m)
    ids, pad = model_tokens(model)
    with torch.no_grad():
        plain = model.encode_multimodal(images, ids, pad)
        torch.testing.assert_close(model.encode_multimodal(images, ids, pad, previous=previous).patches, plain.patches)
        torch.nn.init.normal_(stem[2].weight, std=0.1)
        torch.nn.init.normal_(stem[2].bias, std=0.1)
        moved = model.encode_multimodal(images, ids, pad, previous=previous).patches
        dx, dy = torch.zeros_like(images), torch.zeros_like(images)
        dx[..., 1:-1] = (images[..., 2:] - images[..., :-2]) / 2
        dy[..., 1:-1, :] = (images[..., 2:, :] - images[..., :-2, :]) / 2
        change = images - previous
        expected = stem(torch.cat([images, change, change * dx, change * dy], 1)).flatten(2).transpose(1, 2)
        torch.testing.assert_close(moved, plain.patches + expected)
        first = torch.stack([previous[0], images[1]])  # row 1 has no previous frame: passes itself
        out = model.mask_prior.pixel_motion(images, first)
        assert out[1].abs().max() == 0 and out[0].abs().max() > 0
        nudged = previous.clone()
        nudged[:, :, :p, :p] += 1.0  # a change in the first patch only
        delta = model.mask_prior.pixel_motion(images, nudged) - model.mask_prior.pixel_motion(images, previous)
        assert delta[:, 0].abs().max() > 0 and delta[:, 1:].abs().max() == 0
        with pytest.raises(ValueError, match="differ in shape"):
            model.mask_prior.pixel_motion(images, previous[:1])
    no_stem = build_model(load_model_config("cpu_small")).mask_prior
    with pytest.raises(ValueError, match="no motion stem"):
        no_stem.pixel_motion(images, previous)


def model_tokens(model, batch=2):
    vocab = model.config.beit3.vocab_size
    ids = torch.randint(3, vocab, (batch, 6))
    return ids, torch.zeros(batch, 6, dtype=torch.bool)


def test_patch_positions_of_a_model_built_from_scratch_start_as_2d_sincos():
    from mpg_sam2_ros.core.config import Beit3Config, ConfigError, ModelConfig
    from mpg_sam2_ros.core.modeling.multimodal_encoder import MultimodalEncoder, sincos_2d

    table = sincos_2d(4, 8)
    assert table.shape == (16, 8)
    # raster order: the first half of the channels follows the column, the second the row
    torch.testing.assert_close(table[1, :4], table[5, :4])
    torch.testing.assert_close(table[4, 4:], table[7, 4:])
    assert not torch.allclose(table[0, :4], table[1, :4]) and not torch.allclose(table[0, 4:], table[4, 4:])
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(4, 6)

    small = dict(embed_dim=16, num_heads=2, ffn_dim=32, num_layers=1, img_size=32, patch_size=8, vocab_size=64, max_text_len=8)
    for init, proportional in (("sincos", True), ("normal", False)):
        torch.manual_seed(0)
        rows = MultimodalEncoder(cfg=Beit3Config(**small, pos_init=init)).beit3.encoder.embed_positions.A.weight[3:].detach()
        ratio = rows / sincos_2d(4, 16)
        finite = ratio[sincos_2d(4, 16).abs() > 0.1]
        assert bool(torch.allclose(finite, finite[0].expand_as(finite), atol=1e-4)) is proportional
    with pytest.raises(ConfigError, match="pos_init"):
        ModelConfig(beit3=Beit3Config(**small, pos_init="zeros")).validate()


def test_conv_stem_starts_as_the_official_patch_embedding_and_then_learns():
    """``beit3.conv_stem``: zero-initialised, so the encoder's outputs equal the one without it
    (a checkpoint trained without it warm-starts exactly); its output is added per patch, in
    raster order, and a step of training moves every layer of it."""
    from mpg_sam2_ros.core.config import Beit3Config, ConfigError, ModelConfig
    from mpg_sam2_ros.core.modeling.multimodal_encoder import MultimodalEncoder

    small = dict(embed_dim=16, num_heads=2, ffn_dim=32, num_layers=1, img_size=32, patch_size=8, vocab_size=64, max_text_len=8)
    torch.manual_seed(0)
    plain = MultimodalEncoder(cfg=Beit3Config(**small)).eval()
    stem = MultimodalEncoder(cfg=Beit3Config(**small, conv_stem=4)).eval()
    missing, unexpected = stem.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("conv_stem.") for k in missing)
    assert [m.stride for m in stem.conv_stem.body if isinstance(m, torch.nn.Conv2d)] == [(2, 2)] * 3  # log2(8)
    images, ids = torch.randn(2, 3, 32, 32), torch.tensor([[0, 5, 6, 2], [0, 7, 2, 1]])
    pad = torch.tensor([[False] * 4, [False, False, False, True]])
    a, b = plain(images, ids, pad), stem(images, ids, pad)
    assert torch.equal(a.patches, b.patches) and torch.equal(a.cls, b.cls) and torch.equal(a.text, b.text)

    # where it is not zero, patch k's embedding gets the stem's cell k (raster order)
    torch.nn.init.normal_(stem.conv_stem.proj.weight)
    seen = {}
    hook = stem.beit3.vision_embed.register_forward_hook(lambda m, args, out: seen.update(x=out))  # None: keeps out
    stem(images, ids, pad)
    hook.remove()
    base = plain.beit3.vision_embed(images)
    cells = stem.conv_stem(images).flatten(2).transpose(1, 2)
    torch.testing.assert_close(seen["x"][:, 1:], base[:, 1:] + cells)
    torch.testing.assert_close(seen["x"][:, :1], base[:, :1])  # the [CLS] row is BEiT-3's own

    torch.nn.init.zeros_(stem.conv_stem.proj.weight)
    stem.train()
    opt = torch.optim.SGD(stem.parameters(), lr=0.1)
    for _ in range(2):  # the zero projection gets a gradient first, then the convolutions behind it
        opt.zero_grad()
        stem(images, ids, pad).patches.square().mean().backward()
        opt.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in stem.conv_stem.parameters())
    with pytest.raises(ConfigError, match="conv_stem"):
        ModelConfig(beit3=Beit3Config(**{**small, "patch_size": 6, "img_size": 36}, conv_stem=4)).validate()
    with pytest.raises(ConfigError, match="conv_stem"):
        ModelConfig(beit3=Beit3Config(**small, conv_stem=-1)).validate()


def test_coord_prior_adds_a_plane_with_slopes_read_from_the_class_token():
    """``mpg.coord_prior``: M_p's logit (Eq. 3) + a_x * x + a_y * y, (a_x, a_y) = Linear(V'_cls)."""
    torch.manual_seed(0)
    patches, cls = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16)
    plain = MaskPriorGenerator(embed_dim=16, out_dim=8, num_heads=2).eval()
    coord = MaskPriorGenerator(embed_dim=16, out_dim=8, num_heads=2, coord_prior=True).eval()
    coord.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        contextual = plain.contextualise(patches)
        slopes = coord.coord_head(plain.class_tokens(cls, contextual))  # [2, 3, 2]
        x = torch.tensor([-0.75, -0.25, 0.25, 0.75])
        plane = slopes[..., 0, None, None] * x[None, :] + slopes[..., 1, None, None] * x[:, None]  # rows are y
        expected = torch.sigmoid(torch.logit(plain(patches, cls).prior[:, :, 0], eps=0) + plane)
        torch.testing.assert_close(coord(patches, cls).prior[:, :, 0], expected, atol=1e-5, rtol=1e-4)
    assert MaskPriorGenerator(embed_dim=16, out_dim=8, num_heads=2, coord_prior=True, produce_prior=False).coord_head is None


def test_block_flow_reads_an_objects_shift_against_the_cameras():
    """``mask_prior.block_flow``: over a textured scene, the camera moves so that the background
    shifts by (-2, +4) px in the view while a square moves (+6, 0) px in the world: the square's
    cell reads (+6, 0), the cells away from it 0 (the camera's shift is taken out), and the
    evidence is the square's cell's."""
    from mpg_sam2_ros.core.modeling.mask_prior import block_flow

    torch.manual_seed(0)
    m, cell, size = 64, 16, 12
    world = torch.randn(1, 3, m + 40, m + 40)
    world = torch.nn.functional.avg_pool2d(world, 3, stride=1, padding=1)[0]  # texture coarser than a pixel
    square = torch.full((3, size, size), 2.0)
    square[1] = -2.0
    square[:, 3:6, 3:6] = -2.0  # a mark inside, so the square has content to match

    def view(cam_y, cam_x, y, x):
        """The scene seen with the view's origin at world (20 + cam_y, 20 + cam_x), the square at world (y, x)."""
        img = world[:, 20 + cam_y: 20 + cam_y + m, 20 + cam_x: 20 + cam_x + m].clone()
        img[:, y - cam_y: y - cam_y + size, x - cam_x: x - cam_x + size] = square
        return img

    before = view(0, 0, 16, 16)
    after = view(2, -4, 22, 16)  # in the view: background (-2, +4), square (+4, +4); in cell (1, 1) both times
    moved, evidence = block_flow(after[None], before[None], cell=cell, radius=6)
    g = m // cell
    assert moved.shape == (1, 2, g, g) and evidence.shape == (1, 1, g, g)
    assert moved[0, :, 1, 1].tolist() == [6.0, 0.0]
    far = torch.ones(g, g, dtype=torch.bool)
    far[:3, :3] = False  # cells that border the square may see it uncovered or covered
    assert moved[0, :, far].abs().max() == 0
    assert evidence[0, 0, 1, 1] > 0.5 and evidence[0, 0, 1, 1] == evidence.max()


def test_block_flow_adds_each_patchs_velocity_and_is_silent_without_a_reference():
    """``mpg.block_flow``: ``encode_multimodal`` adds ``flow_proj`` of (velocity / 4, evidence)
    per patch, zero at start, zero for rows with gap 0; the velocity is the displacement over the
    gap; rows of one frame repeated (several commands) give each row the same features."""
    from mpg_sam2_ros.core.config import load_model_config
    from mpg_sam2_ros.core.modeling.mask_prior import block_flow, frame_gaps, previous_frames

    torch.manual_seed(0)
    model = build_model(load_model_config("cpu_small", ["mpg.block_flow=3"])).eval()
    mpg, m = model.mask_prior, model.config.beit3.img_size
    images, reference = torch.randn(2, 3, m, m), torch.randn(2, 3, m, m)
    ids, pad = model_tokens(model)
    gaps = torch.tensor([3, 0])
    with torch.no_grad():
        plain = model.encode_multimodal(images, ids, pad)
        torch.testing.assert_close(model.encode_multimodal(images, ids, pad, reference=reference, gaps=gaps).patches, plain.patches)
        torch.nn.init.normal_(mpg.flow_proj[2].weight, std=0.1)
        torch.nn.init.normal_(mpg.flow_proj[2].bias, std=0.1)
        out = model.encode_multimodal(images, ids, pad, reference=reference, gaps=gaps).patches - plain.patches
        moved, evidence = block_flow(images, reference, cell=model.config.beit3.patch_size, radius=mpg.block_flow_radius)
        feats = torch.cat([moved / 3 / 4.0, evidence], 1).flatten(2).transpose(1, 2)
        torch.testing.assert_close(out[0], mpg.flow_proj(feats[0]))
        assert out[1].abs().max() == 0
        one = model.encode_multimodal(images[:1].expand(2, -1, -1, -1), ids, pad, reference=reference[:1].expand(2, -1, -1, -1),
                                      gaps=torch.tensor([3])).patches
        flow = one - model.encode_multimodal(images[:1].expand(2, -1, -1, -1), ids, pad).patches
        torch.testing.assert_close(flow[0], out[0])
        torch.testing.assert_close(flow[1], out[0])
        with pytest.raises(ValueError, match="gap"):
            model.encode_multimodal(images, ids, pad, reference=reference)
    clip = torch.arange(5.0)[None, :, None]  # [B=1, T=5, 1]: frame t holds t
    assert previous_frames(clip, gap=3)[0, :, 0].tolist() == [0, 0, 0, 0, 1]
    assert frame_gaps(5, 3).tolist() == [0, 1, 2, 3, 3]


def test_block_scale_reads_growth_about_each_patch_against_the_cameras_subpixel_shift():
    """``mask_prior.block_scale``: over a textured scene that the camera moves by a fraction of
    a pixel, three discs of one colour with a mark inside: one grows by 1.2, one shrinks by 1.2,
    one stays. Their cells read log 1.2 > 0, < 0 and about 0, the background's cells about 0
    (``camera_shift`` takes the camera out), and the evidence is higher where the size changed."""
    from mpg_sam2_ros.core.modeling.mask_prior import block_scale, camera_shift

    torch.manual_seed(0)
    m, cell = 64, 16
    texture = torch.nn.functional.avg_pool2d(torch.randn(1, 3, m + 20, m + 20), 5, stride=1, padding=2)
    y, x = torch.meshgrid(torch.arange(m, dtype=torch.float32), torch.arange(m, dtype=torch.float32), indexing="ij")

    def view(cam_y, cam_x, radii):
        """The background seen from (cam_y, cam_x) (bilinear), discs at fixed places in the view."""
        grid = torch.stack([(x + 10 + cam_x + 0.5) / (m + 20) * 2 - 1, (y + 10 + cam_y + 0.5) / (m + 20) * 2 - 1], -1)
        img = torch.nn.functional.grid_sample(texture, grid[None], align_corners=False)[0]
        for (cy, cx), r in zip(((8.5, 8.5), (8.5, 40.5), (40.5, 24.5)), radii):
            d = ((y - cy) ** 2 + (x - cx) ** 2).sqrt()
            inside = (r + 0.5 - d).clamp(0, 1)  # anti-aliased edge
            mark = ((y - cy).abs() < r / 3) & ((x - cx).abs() < r / 3)
            disc = torch.stack([torch.full_like(d, 2.0), torch.where(mark, 2.0, -2.0), torch.full_like(d, -1.0)])
            img = img * (1 - inside) + disc * inside
        return img

    before = view(0.0, 0.0, (5.5, 6.6, 6.0))
    after = view(0.6, -1.3, (6.6, 5.5, 6.0))
    cam = camera_shift(after[None], before[None], cell=cell, radius=6)
    torch.testing.assert_close(cam[0], torch.tensor([-0.6, 1.3]), atol=0.25, rtol=0)
    logscale, evidence = block_scale(after[None], before[None], cell=cell)
    g = m // cell
    assert logscale.shape == (1, 1, g, g) and evidence.shape == (1, 1, g, g)
    step = math.log(1.2)
    assert logscale[0, 0, 0, 0] > 0.5 * step and logscale[0, 0, 0, 2] < -0.5 * step
    assert logscale[0, 0, 2, 1].abs() < 0.3 * step
    background = torch.ones(g, g, dtype=torch.bool)
    background[0], background[2] = False, False  # rows 1 and 3 hold no disc
    assert logscale[0, 0, background].abs().max() < 0.3 * step
    assert min(evidence[0, 0, 0, 0], evidence[0, 0, 0, 2]) > 2 * evidence[0, 0, 2, 1]


def test_block_scale_adds_each_patchs_growth_and_is_silent_without_a_reference():
    """``mpg.block_scale``: ``encode_multimodal`` adds ``scale_proj`` of (log scale per frame x
    40, evidence) per patch, zero at start, zero for rows with gap 0; rows of one frame repeated
    (several commands) give each row the same features; a negative setting is refused."""
    from mpg_sam2_ros.core.config import ConfigError, load_model_config
    from mpg_sam2_ros.core.modeling.mask_prior import block_scale, scale_reference

    torch.manual_seed(0)
    model = build_model(load_model_config("cpu_small", ["mpg.block_scale=6"])).eval()
    mpg, m = model.mask_prior, model.config.beit3.img_size
    images, reference = torch.randn(2, 3, m, m), torch.randn(2, 3, m, m)
    ids, pad = model_tokens(model)
    gaps = torch.tensor([6, 0])
    with torch.no_grad():
        plain = model.encode_multimodal(images, ids, pad)
        zero = model.encode_multimodal(images, ids, pad, scale_reference=reference, scale_gaps=gaps).patches
        torch.testing.assert_close(zero, plain.patches)
        torch.nn.init.normal_(mpg.scale_proj[2].weight, std=0.1)
        torch.nn.init.normal_(mpg.scale_proj[2].bias, std=0.1)
        out = model.encode_multimodal(images, ids, pad, scale_reference=reference, scale_gaps=gaps).patches - plain.patches
        logscale, evidence = block_scale(images, reference, cell=model.config.beit3.patch_size)
        feats = torch.cat([logscale / 6 * 40.0, evidence], 1).flatten(2).transpose(1, 2)
        torch.testing.assert_close(out[0], mpg.scale_proj(feats[0]))
        assert out[1].abs().max() == 0
        one = model.encode_multimodal(images[:1].expand(2, -1, -1, -1), ids, pad,
                                      scale_reference=reference[:1].expand(2, -1, -1, -1), scale_gaps=torch.tensor([6])).patches
        grown = one - model.encode_multimodal(images[:1].expand(2, -1, -1, -1), ids, pad).patches
        torch.testing.assert_close(grown[0], out[0])
        torch.testing.assert_close(grown[1], out[0])
        with pytest.raises(ValueError, match="gap"):
            model.encode_multimodal(images, ids, pad, scale_reference=reference)
    clip = torch.zeros(1, 8, 3, m, m)
    assert scale_reference(6, clip)["scale_gaps"].tolist() == [0, 1, 2, 3, 4, 5, 6, 6]
    assert scale_reference(0, clip) == {}
    with pytest.raises(ConfigError, match="block_scale"):
        load_model_config("cpu_small", ["mpg.block_scale=-1"]).validate()


def test_motion_readout_adds_slopes_from_cls_times_each_cells_motion_cues_to_the_prior_logit():
    """``mpg.motion_readout``: M_p's logit (Eq. 3) gets ``sum_k a_k c_k`` per cell, with a =
    ``motion_head``(V'_cls) and c the cell's raw cues (vy, vx, |vy|, |vx|, flow evidence, growth,
    |growth|, scale evidence); zero at start; frames given without references get no motion
    term; a scale-less call fills the scale cues with zeros; the config needs the block flow."""
    from mpg_sam2_ros.core.config import ConfigError, load_model_config
    from mpg_sam2_ros.core.modeling.mask_prior import flow_reference, scale_reference

    torch.manual_seed(0)
    model = build_model(load_model_config("cpu_small", ["mpg.block_flow=3", "mpg.block_scale=4",
                                                        "mpg.motion_readout=true"])).eval()
    mpg, m = model.mask_prior, model.config.beit3.img_size
    clip = torch.randn(1, 5, 3, m, m)
    ids, pad = model_tokens(model)
    ids, pad = ids[:1].expand(5, -1), pad[:1].expand(5, -1)
    refs = flow_reference(3, clip) | scale_reference(4, clip)

    def prior(**kw):
        mm = model.encode_multimodal(clip[0], ids, pad, **kw)
        return mm, model.global_context(mm, batch=1).prior

    with torch.no_grad():
        mm, before = prior(**refs)
        assert mm.motion.shape == (5, mpg.cell_coords(model.config.beit3.grid_size, clip).shape[0], 8)
        flow = mpg.flow_cues(clip[0], refs["reference"], refs["gaps"])
        scale = mpg.scale_cues(clip[0], refs["scale_reference"], refs["scale_gaps"])
        torch.testing.assert_close(mm.motion, torch.cat([flow[..., :2], flow[..., :2].abs(), flow[..., 2:],
                                                         scale[..., :1], scale[..., :1].abs(), scale[..., 1:]], -1))
        assert mm.motion[0].abs().max() == 0 and mm.motion[3].abs().max() > 0  # frame 0 has nothing behind it
        torch.nn.init.normal_(mpg.motion_head.weight, std=0.5)
        torch.nn.init.normal_(mpg.motion_head.bias, std=0.5)
        _, after = prior(**refs)
        patches = mm.patches.reshape(1, 5, *mm.patches.shape[1:])
        contextual = mpg.contextualise(patches)
        cls_ctx = mpg.class_tokens(mm.cls.reshape(1, 5, -1), contextual)
        slopes = mpg.motion_head(cls_ctx)  # [1, 5, 8]
        added = (mm.motion * slopes[0][:, None]).sum(-1).reshape(after.shape)
        torch.testing.assert_close(torch.logit(after), torch.logit(before) + added, rtol=1e-4, atol=1e-4)
        _, plain = prior()  # no references: no cues, no motion term
        torch.testing.assert_close(plain, before)
        no_scale = model.encode_multimodal(clip[0], ids, pad, reference=refs["reference"], gaps=refs["gaps"]).motion
        assert no_scale[..., 5:].abs().max() == 0
        torch.testing.assert_close(no_scale[..., :5], mm.motion[..., :5])
    with pytest.raises(ConfigError, match="motion_readout"):
        load_model_config("cpu_small", ["mpg.motion_readout=true"]).validate()


def test_sam_stem_reads_each_patchs_block_of_sam2_stride8_features_position_by_position():
    """``mpg.sam_stem``: ``encode_multimodal`` adds, per BEiT-3 patch, the stem of the k x k
    block of SAM 2's stride-8 level under it (k = 32 / 8 = 4 in cpu_small), zero at start; a
    change inside one block moves that patch only, and where in the block it lies matters; one
    frame's features serve several commands; mismatched rows are refused."""
    from mpg_sam2_ros.core.config import ConfigError, load_model_config
    from mpg_sam2_ros.core.modeling.mpg_sam2 import ImageFeatures

    torch.manual_seed(0)
    model = build_model(load_model_config("cpu_small", ["mpg.sam_stem=16"])).eval()
    mpg, m, s = model.mask_prior, model.config.beit3.img_size, model.image_size
    g = model.multimodal_encoder.cfg.grid_size
    assert mpg.sam_block == (s // 8) // g == 4
    images = torch.randn(2, 3, m, m)
    ids, pad = model_tokens(model)
    with torch.no_grad():
        feats = model.encode_image(torch.randn(2, 3, s, s))
        plain = model.encode_multimodal(images, ids, pad)
        torch.testing.assert_close(model.encode_multimodal(images, ids, pad, image_features=feats).patches, plain.patches)
        torch.nn.init.normal_(mpg.sam_stem[2].weight, std=0.1)
        added = model.encode_multimodal(images, ids, pad, image_features=feats).patches - plain.patches
        torch.testing.assert_close(added, model.sam_patch_features(feats))
        assert added.abs().amax() > 0

        level = 1  # stride 8 in cpu_small: 32 x 32
        assert s // feats.feat_sizes[level][0] == 8
        h = feats.feat_sizes[level][0]

        def poke(y: int, x: int) -> torch.Tensor:
            v = [f.clone() for f in feats.vision_feats]
            v[level][y * h + x] += 3.0  # one position of the level, every channel, both frames
            return model.sam_patch_features(ImageFeatures(v, feats.vision_pos, feats.feat_sizes)) - model.sam_patch_features(feats)

        moved = poke(5, 9)  # inside the block of patch (1, 2)
        changed = moved.abs().amax(dim=(0, 2)) > 0
        assert changed.nonzero().flatten().tolist() == [1 * g + 2]
        assert not torch.allclose(moved, poke(4, 8))  # the same block, another position: another feature

        one = model.encode_multimodal(images[:1].expand(2, -1, -1, -1), ids, pad, image_features=feats.select([0])).patches
        base = model.encode_multimodal(images[:1].expand(2, -1, -1, -1), ids, pad).patches
        torch.testing.assert_close(one - base, added[:1].expand(2, -1, -1))
        with pytest.raises(ValueError, match="rows of SAM 2 features"):
            model.encode_multimodal(images[:1].expand(3, -1, -1, -1), model_tokens(model, 3)[0], model_tokens(model, 3)[1],
                                    image_features=feats)
        with pytest.raises(ValueError, match="SAM 2 stem reads"):
            mpg.sam_patches(torch.randn(1, 5, h, h), g)
        assert mpg.sam_patches(torch.randn(1, 16, 30, 30), g).shape == (1, g * g, model.config.beit3.embed_dim)  # resampled
    with pytest.raises(ValueError, match="high-resolution"):
        build_model(load_model_config("cpu_small", ["mpg.sam_stem=16", "sam2.overrides.use_high_res_features_in_sam=false"]))
    with pytest.raises(ConfigError, match="sam_stem"):
        load_model_config("cpu_small", ["mpg.sam_stem=-1"]).validate()
