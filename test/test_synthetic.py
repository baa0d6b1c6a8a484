"""The synthetic benchmark: deterministic bytes, the Ref-YouTube-VOS layout read back by the
real loader, every expression type with a real distractor, and bench-accuracy's JSON."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mpg_sam2_ros.cli import main
from mpg_sam2_ros.training.datasets import RefYouTubeVOS
from mpg_sam2_ros.training.synthetic import (EXPRESSION_TYPES, MOTIONS, SyntheticConfig, generate_video, write_split)

REPO = Path(__file__).resolve().parents[1]


def _digest(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_and_prefix(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_split(a, seed=7, videos=3)
    write_split(b, seed=7, videos=3, workers=2)  # rendered in two processes: the same bytes, meta files included
    write_split(c, seed=8, videos=3)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    # video i depends on (seed, i) only
    v = generate_video(7, 2)
    assert np.array_equal(v.frames, generate_video(7, 2).frames)
    assert not np.array_equal(v.frames, generate_video(7, 1).frames)


def test_layout_read_back_by_loader(tmp_path):
    stats = write_split(tmp_path, seed=3, videos=4)
    split = RefYouTubeVOS(tmp_path)
    assert not split.problems
    assert len(split.videos) == 4
    meta = json.loads((tmp_path / "meta.json").read_text())
    exprs = split.expressions()
    assert len(exprs) == stats["expressions"]
    assert {e.exp_type for e in exprs} <= set(EXPRESSION_TYPES)
    for e in exprs:
        video = split.video(e.video)
        masks = split.expression_masks(e, range(len(video.frame_names)))
        info = meta["videos"][e.video]["expressions"][e.exp_id]
        assert info["distractors"], "every expression has a distractor"
        assert int((~masks.reshape(len(masks), -1).any(1)).sum()) == info["absent_frames"]
        if e.exp_type == "absent":
            assert info["absent_frames"] >= 2 and masks.any()
    frames = split.read_frames(split.videos[0], [0, 1])
    assert frames.shape == (2, 120, 160, 3) and frames.dtype == np.uint8
    assert (tmp_path / "JPEGImages" / split.videos[0].video / "00000.png").is_file()  # lossless by default


def test_expression_types_and_distractors_hold():
    cfg = SyntheticConfig()
    counts = dict.fromkeys(EXPRESSION_TYPES, 0)
    for i in range(12):
        v = generate_video(11, i, cfg)
        objs = {o.oid: o for o in v.objects}
        for e in v.expressions:
            counts[e.type] += 1
            t = objs[e.target]
            assert e.text.startswith("the ")
            for d in e.distractors:
                o = objs[d]
                if e.type in ("motion", "spatial"):
                    assert o.same_look(t), "motion/spatial distractors look exactly like the target"
                else:
                    assert o.color == t.color or o.shape == t.shape
            if e.type == "motion":
                assert t.motion not in {objs[d].motion for d in e.distractors}
                assert any(w in e.text for w in ("mov", "going", "grow", "shrink", "still", "bounc", "stays", "bigger", "smaller"))
            if e.type == "spatial":
                d = objs[e.distractors[0]]
                vis = [(v.labels[i] == t.oid).any() and (v.labels[i] == d.oid).any() for i in range(cfg.frames)]
                axis = "x" if ("left" in e.text or "right" in e.text) else "y"
                first = ("left" in e.text) or ("top" in e.text) or ("higher" in e.text)
                a, b = getattr(t, axis), getattr(d, axis)
                assert all((a[i] < b[i]) == first for i in range(cfg.frames) if vis[i])
    assert all(counts[t] > 0 for t in ("appearance", "spatial", "motion")), counts


def test_long_videos_leave_and_come_back():
    v = generate_video(4, 0, SyntheticConfig(frames=200))
    assert v.frames.shape[0] == 200
    assert not any(o.motion in ("grow", "shrink") for o in v.objects)
    for o in v.objects:  # wrap-around linear motion: off screen, then back
        area = (v.labels == o.oid).reshape(200, -1).sum(1)
        if o.motion in ("left", "right", "up", "down") and (area == 0).any():
            first_gone = int(np.flatnonzero(area == 0)[0])
            assert (area[first_gone:] > 0).any()
            return
    pytest.skip("no object left the frame in this video")


def test_bad_arguments(tmp_path, capsys):
    with pytest.raises(ValueError):
        SyntheticConfig(frames=1)
    assert main(["make-synthetic", "--out", str(tmp_path / "s"), "--seed", "1", "--videos", "1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["make-synthetic", "--out", str(tmp_path / "s"), "--seed", "1", "--videos", "1", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["make-synthetic", "--out", str(tmp_path / "t"), "--seed", "1", "--videos", "0", "--quiet"]) == 2


def test_probe_presence_recomputes_what_the_engine_gate_gives():
    """scripts/probe_presence.py blanks the frames below a threshold without rerunning the model:
    its J&F and false-positive rate equal bench-accuracy's with --presence-threshold (the engine's
    gate) at 0.5 and above; the AUC is 1 for a perfect score and 0.5 for a constant one."""
    import importlib.util

    from mpg_sam2_ros.training.bench_accuracy import run_bench_accuracy

    spec = importlib.util.spec_from_file_location("probe_presence", REPO / "scripts" / "probe_presence.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    syn = SyntheticConfig(frames=8)
    rows = probe.collect(None, seed=5, videos=2, window=4, synthetic=syn)
    probs = sorted({float(p) for r in rows for p in r["prob"] if p > 0.5})
    k = len(probs) // 2  # a threshold that blanks some of the shown frames and keeps others, halfway
    t = (probs[k - 1] + probs[k]) / 2  # between two scores: no frame sits on it (float32 vs the engine's logit)
    for threshold in (0.5, t):
        got = probe.at_threshold(rows, threshold)
        res = run_bench_accuracy(seed=5, videos=2, window=4, policy={"presence_threshold": threshold}, synthetic=syn,
                                 progress=False)["modes"]["streaming"]
        assert got["J&F"] == pytest.approx(res["J&F"], abs=0.011), threshold
        assert got["false_positive_rate"] == res["absent_frames"]["false_positive_rate"]
        assert got["missed_rate"] == res["present_frames"]["missed_rate"]
    # hysteresis (--keep): with keep == t it is the plain gate; below t it holds a shown object
    assert [probe.at_threshold(rows, t, t)[k] for k in ("J&F", "false_positive_rate")] == \
        [probe.at_threshold(rows, t)[k] for k in ("J&F", "false_positive_rate")]
    assert probe.hold(np.array([0.6, 0.95, 0.7, 0.55, 0.4, 0.7, 0.95]), 0.9, 0.5).tolist() == \
        [False, True, True, True, False, False, True]
    present = np.array([True, True, False, False])
    assert probe.auc([{"prob": np.array([0.9, 0.8, 0.1, 0.2]), "present": present}]) == 1.0
    assert probe.auc([{"prob": np.full(4, 0.7), "present": present}]) == 0.5


def test_probe_presence_write_calibrates_the_checkpoint(tmp_path):
    """--write picks the highest threshold whose J&F is within the tolerance of J&F at 0.5 and
    stores it in the checkpoint's config: the model loaded from it then gates at that threshold
    by default (bench-accuracy records it as the policy in force); without 0.5 in the grid it
    refuses."""
    import importlib.util

    from mpg_sam2_ros.core.checkpoint import save_checkpoint
    from mpg_sam2_ros.core.config import load_model_config
    from mpg_sam2_ros.core.modeling import build_model
    from mpg_sam2_ros.core.pipeline import load_pipeline
    from mpg_sam2_ros.training.bench_accuracy import run_bench_accuracy

    spec = importlib.util.spec_from_file_location("probe_presence", REPO / "scripts" / "probe_presence.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    grid = [{"threshold": t, "J&F": jf, "false_positive_rate": fp, "missed_rate": m}
            for t, jf, fp, m in ((0.5, 60.0, 0.6, 0.0), (0.8, 59.8, 0.4, 0.01), (0.9, 59.6, 0.3, 0.02),
                                 (0.95, 58.0, 0.2, 0.1))]
    assert probe.calibrate(grid, 0.5)["threshold"] == 0.9
    assert probe.calibrate(grid, 0.1)["threshold"] == 0.5  # nothing within 0.1: SAM 2's rule stays
    with pytest.raises(SystemExit):
        probe.calibrate(grid[1:], 0.5)
    path = tmp_path / "m.safetensors"
    save_checkpoint(build_model(load_model_config("cpu_small")), path)
    result = {"seed": 9, "videos": 3, "window": 8, "auc_present": 0.9, "thresholds": grid}
    record = probe.write_calibration(str(path), result, 0.5)
    assert record["presence_threshold"] == 0.9 and record["chosen"]["false_positive_rate"] == 0.3
    assert load_pipeline(checkpoint=str(path)).model.config.presence_threshold == 0.9
    res = run_bench_accuracy(seed=5, videos=1, checkpoint=str(path), synthetic=SyntheticConfig(frames=4), progress=False)
    assert res["policy"]["presence_threshold"] == 0.9


def test_probe_errors_splits_what_j_loses():
    """scripts/probe_errors.py: each frame in one class, the classes' losses add up to 1 - J, and
    J is bench-accuracy's J on the same videos (the bundled model, so the classes are mixed)."""
    import importlib.util

    from mpg_sam2_ros.training.bench_accuracy import run_bench_accuracy

    spec = importlib.util.spec_from_file_location("probe_errors", REPO / "scripts" / "probe_errors.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    label = np.zeros((6, 6), np.uint8)
    label[:2, :2], label[3:, 3:] = 1, 2
    m = np.zeros((6, 6), bool)
    assert probe.classify(m, label, 1) == "missed" and probe.classify(m, label, 3) == "absent_empty"
    m[3:5, 3:5] = True
    assert probe.classify(m, label, 1) == "wrong_object" and probe.classify(m, label, 3) == "absent_shown"
    m[:2, :2] = True  # 4 pixels on each: the target wins a tie
    assert probe.classify(m, label, 1) == "on_target" and probe.classify(m, label, 2) == "on_target"
    m = np.zeros((6, 6), bool)
    m[5, 0] = True  # only the background
    assert probe.classify(m, label, 1) == "wrong_object"
    syn = SyntheticConfig(frames=8)
    frames, _ = probe.collect(None, seed=5, videos=2, window=4, presence_threshold=0.5, synthetic=syn)
    s = probe.summarise(frames)
    assert sum(s["frames_by_class"].values()) == s["frames"] == len(frames)
    assert sum(s["loss_share"].values()) == pytest.approx(100 - s["J"], abs=0.05)
    assert s["frames_by_class"]["on_target"] > 0 and s["frames_by_class"]["wrong_object"] > 0
    visible = [f for f in frames if f[2] in ("on_target", "wrong_object", "missed")]
    assert all(f[5] in (0, 1) for f in visible) and all(f[5] is None for f in frames if f not in visible)
    on = probe.prior_on_target(frames)
    assert sum(v["frames"] for v in on.values()) == len(visible)
    grid = np.zeros((2, 2), np.float32)
    grid[1, 1] = 1.0  # all the prior's mass on the cell over object 2
    assert probe.prior_pick(grid, label) == 2 and probe.prior_pick(grid[::-1, ::-1], label) == 1
    assert probe.prior_pick(np.zeros((2, 2), np.float32), label) == 0
    kinds = probe.target_motions(5, 2, syn)
    motion = [f for f in frames if f[1] == "motion"]
    assert set(kinds) == {f[0] for f in motion} and set(kinds.values()) <= set(MOTIONS)
    split = probe.by_target_motion(frames, kinds)
    assert sum(v["expressions"] for v in split.values()) == len(kinds)
    assert sum(sum(v["frames_by_class"].values()) for v in split.values()) == len(motion)
    res = run_bench_accuracy(seed=5, videos=2, window=4, policy={"presence_threshold": 0.5}, synthetic=syn,
                             progress=False)
    assert s["J"] == pytest.approx(res["J"], abs=0.011) and s["expressions"] == res["modes"]["streaming"]["expressions"]


def test_bench_accuracy_json(tmp_path, capsys):
    out = tmp_path / "acc.json"
    rc = main(["bench-accuracy", "--config", "cpu_small", "--seed", "5", "--videos", "2", "--frames", "6",
               "--mode", "both", "--window", "4", "--reanchor-every", "2", "--presence-threshold", "0.8",
               "--quiet", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["policy"] == {"reanchor_after_absent": 0, "reanchor_every": 2, "presence_threshold": 0.8}
    assert res["weights"].startswith("random")
    assert set(res["modes"]) == {"streaming", "offline"}
    for mode in res["modes"].values():
        assert 0 <= mode["J&F"] <= 100
        assert set(mode["by_type"]) == set(EXPRESSION_TYPES)
        assert mode["seconds_per_frame"] > 0
        assert 0 <= mode["absent_frames"]["false_positive_rate"] <= 1
    assert res["J&F"] == res["modes"]["streaming"]["J&F"]
    assert res["generator"]["videos"] == 2


def test_bundled_tokenizer_keeps_every_benchmark_word_whole():
    """cpu_small's tokenizer (scripts/make_tokenizer.py) must give each word of the benchmark one
    piece, and know capital letters: a text encoder trained from scratch cannot ground "red" if
    it arrives as "r" + "e" + "d" (the first bundled tokenizer did that)."""
    import re

    from mpg_sam2_ros.core.config import load_model_config
    from mpg_sam2_ros.core.pipeline import load_tokenizer
    from mpg_sam2_ros.training.synthetic import COLORS, MOTION_PHRASES, SHAPES, SIZES, SPATIAL_PHRASES

    tok = load_tokenizer(load_model_config("cpu_small", []))
    words = {"the", *COLORS, *SHAPES, *SIZES}
    words |= {w for phrases in (*MOTION_PHRASES.values(), *SPATIAL_PHRASES.values()) for p in phrases for w in p.split()}
    for w in sorted(words):
        ids = tok.encode(w).ids[0].tolist()
        assert len(ids) == 3, f"{w!r} is {len(ids) - 2} pieces"  # <s> word </s>
    unk = tok._tok.unk_token_id
    ids = tok.encode("The Red Mug ON THE LEFT").ids[0].tolist()
    assert unk not in ids and not re.search(r"\s", "".join(tok._tok.convert_ids_to_tokens(ids)))


def test_probe_prior_splits_appearance_pairs_by_what_differs():
    """scripts/probe_prior.py: every look-alike of every probed appearance window is counted once,
    under what tells it from the named object; the bundled model's prior reads colour; with
    masks=True every window is also in one cell of the prior-by-mask table; the motion windows
    are split by how the target moves, each once."""
    import importlib.util

    from mpg_sam2_ros.training.synthetic import generate_video

    spec = importlib.util.spec_from_file_location("probe_prior", REPO / "scripts" / "probe_prior.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    out = probe.probe(None, seed=4242, videos=3, window=1, masks=True)
    pairs = out.pop("appearance_pairs_by_difference")
    moving = out.pop("motion_by_target_motion")  # the motion windows, split by how the target moves
    assert sum(v["windows"] for v in moving.values()) == out["motion"]["windows"]
    assert sum(round(v["correct"] * v["windows"]) for v in moving.values()) == round(out["motion"]["correct"] * out["motion"]["windows"])
    # --masks crosses the prior's answer with the streaming mask's, window by window
    for kind, cross in out.pop("masks").items():
        n = out[kind]["windows"]
        assert sum(v for k, v in cross.items() if k != "mask_right") == n
        assert cross["prior_right_mask_right"] + cross["prior_right_mask_wrong"] == round(out[kind]["correct"] * n)
        assert cross["mask_right"] == round((cross["prior_right_mask_right"] + cross["prior_wrong_mask_right"]) / n, 3)
    expected: dict[str, int] = {}
    for i in range(3):
        video = generate_video(4242, i)
        objects = {o.oid: o for o in video.objects}
        for e in video.expressions:
            if e.type != "appearance" or not e.distractors:
                continue
            for end in (0, 15, 23):
                lab = video.labels[end]
                if (lab == e.target).sum() < 20 or any((lab == d).sum() < 20 for d in e.distractors):
                    continue
                for d in e.distractors:
                    a, b = objects[e.target], objects[d]
                    key = "+".join(k for k in ("color", "shape", "size") if getattr(a, k) != getattr(b, k)) or "texture"
                    expected[key] = expected.get(key, 0) + 1
    assert {k: v["pairs"] for k, v in pairs.items()} == expected
    assert sum(expected.values()) >= out["appearance"]["windows"] > 0
    assert all(0.0 <= v["correct"] <= 1.0 for v in pairs.values())
    assert pairs["color"]["correct"] >= 0.85  # the shipped model tells colours apart (shapes it does not, yet)


def test_probe_shape_features_reads_what_each_feature_holds():
    """scripts/probe_shape_features.py: mask pooling and box sampling put each value where it
    is; one row per object of at least 20 pixels in frames 0, 12 and 23; and the controls hold:
    an object's outline tells its shape, its mean colour tells its colour but not its shape."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("probe_shape_features", REPO / "scripts" / "probe_shape_features.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    # a map that holds each cell's own (x, y) centre, in pixels of a 40 x 40 frame on a 10 x 10 grid
    ys, xs = torch.meshgrid(torch.arange(10) * 4 + 2.0, torch.arange(10) * 4 + 2.0, indexing="ij")
    coords = torch.stack([xs, ys])
    mask = np.zeros((40, 40), bool)
    mask[8:16, 24:40] = True  # two cells high, four wide
    assert probe.pool(coords, mask) == pytest.approx([32.0, 12.0])
    sampled = probe.box_grid(coords, mask, k=2).reshape(2, 2, 2)  # [C, k, k]: x grows along columns, y down rows
    assert sampled[0, 0].tolist() == pytest.approx([28.0, 36.0]) and sampled[1, :, 0].tolist() == pytest.approx([10.0, 14.0])
    features, labels, owner = probe.collect(None, seed=4242, videos=2)
    expected = sum(int((generate_video(4242, i).labels[t] == o.oid).sum() >= 20)
                   for i in range(2) for t in probe.FRAMES for o in generate_video(4242, i).objects)
    assert len(owner) == expected > 0 and all(len(x) == expected for x in features.values())
    out = probe.probe(None, seed=4242, videos=10)
    acc = out["accuracy"]
    assert {"beit3_out", "beit3_out@box", "sam2_s16", "sam2_s16@box"} <= set(acc)
    assert acc["silhouette"]["shape"] >= 0.8 and acc["rgb_mean"]["color"] >= 0.5  # chances 1/6 and 1/8
    assert acc["rgb_mean"]["shape"] <= out["majority"]["shape"] + 0.15


def test_probe_sam_prior_lays_out_cells_and_scores_every_look_alike():
    """scripts/probe_sam_prior.py: each BEiT-3 cell gets SAM 2's stride-8 block under it,
    position by position; every look-alike of every row is scored once; a head fits the
    training rows it saw (the per-cell targets are learnable, so the comparison is fair)."""
    import importlib.util
    from types import SimpleNamespace

    import torch

    from mpg_sam2_ros.core.modeling.mpg_sam2 import ImageFeatures

    spec = importlib.util.spec_from_file_location("probe_sam_prior", REPO / "scripts" / "probe_sam_prior.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    # a stride-8 level of 8 x 8 positions whose one channel is the position's raster index
    level = torch.arange(64.0).reshape(64, 1, 1)
    feats = ImageFeatures([torch.zeros(256, 1, 1), level, torch.zeros(16, 1, 1)], [], [(16, 16), (8, 8), (4, 4)])
    cells = probe.sam2_cells(SimpleNamespace(image_size=64), feats, g=4)  # 4 x 4 cells of 2 x 2 positions
    assert cells.shape == (16, 4)
    assert cells[0].tolist() == [0.0, 1.0, 8.0, 9.0] and cells[5].tolist() == [18.0, 19.0, 26.0, 27.0]
    from mpg_sam2_ros.core.pipeline import load_pipeline

    pipe = load_pipeline()
    model, tokenizer = pipe.model.eval(), pipe.tokenizer
    rows = probe.collect(model, tokenizer, seed=1000, videos=6)
    assert rows and all(r["sam2"].shape[0] == r["beit3"].shape[0] == r["cover"].numel() for r in rows)
    area = [float(r["target"].mean()) for r in rows]
    assert [float(r["cover"].mean()) for r in rows] == pytest.approx(area, rel=1e-4)
    net, norm = probe.fit(rows, "sam2", steps=300)
    scored = probe.score(net, norm, rows, "sam2")
    assert scored["all"]["pairs"] == sum(len(r["kinds"]) for r in rows)
    assert sum(v["pairs"] for k, v in scored.items() if k != "all") == scored["all"]["pairs"]
    assert scored["all"]["correct"] >= 0.8
