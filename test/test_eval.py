"""J&F evaluation: per-frame metrics against direct (pixel-loop) evaluations of their
definitions, folder matching and problem reporting, and the ``mpg-sam2 eval`` command."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from PIL import Image

from mpg_sam2_ros.core.evaluation import (
    EvalError, boundary_f, boundary_map, boundary_tolerance, evaluate_folders, read_mask, region_similarity,
)
from test_cli import run


def boundary_by_definition(m: np.ndarray) -> np.ndarray:
    """Pixel loop: on the boundary when differing from the right, lower or lower-right
    neighbour (outside = background); last row: right only; last column: lower only."""
    h, w = m.shape
    at = lambda y, x: bool(m[y, x]) if y < h and x < w else False  # noqa: E731
    b = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            if y == h - 1 and x == w - 1:
                continue
            if y == h - 1:
                b[y, x] = at(y, x) != at(y, x + 1)
            elif x == w - 1:
                b[y, x] = at(y, x) != at(y + 1, x)
            else:
                b[y, x] = at(y, x) != at(y, x + 1) or at(y, x) != at(y + 1, x) or at(y, x) != at(y + 1, x + 1)
    return b


def f_by_definition(pred: np.ndarray, gt: np.ndarray, bound_th: float) -> float:
    pb, gb = boundary_by_definition(pred), boundary_by_definition(gt)
    r = math.ceil(bound_th if bound_th >= 1 else bound_th * math.hypot(*pred.shape))
    pts_p, pts_g = np.argwhere(pb), np.argwhere(gb)
    if len(pts_p) == 0 and len(pts_g) == 0:
        return 1.0
    if len(pts_p) == 0 or len(pts_g) == 0:
        return 0.0

    def matched(a, b):  # points of a within Euclidean distance r of some point of b
        return sum(1 for p in a if ((b - p) ** 2).sum(1).min() <= r * r)

    precision, recall = matched(pts_p, pts_g) / len(pts_p), matched(pts_g, pts_p) / len(pts_g)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def blob(rng, h, w):
    m = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(1, 4)):
        c = (int(rng.integers(-3, w + 3)), int(rng.integers(-3, h + 3)))
        cv2.ellipse(m, c, (int(rng.integers(1, w + 1)), int(rng.integers(1, h + 1))), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return m.astype(bool)


@pytest.mark.parametrize("seed", range(4))
def test_boundary_and_f_equal_their_definitions(seed):
    rng = np.random.default_rng(seed)
    for h, w in [(1, 6), (4, 1), (7, 9), (23, 31), (40, 64)]:
        for _ in range(4):
            gt = blob(rng, h, w) if rng.random() < 0.7 else rng.random((h, w)) < 0.3
            pred = np.roll(gt, int(rng.integers(-3, 4)), axis=1) if rng.random() < 0.6 else blob(rng, h, w)
            np.testing.assert_array_equal(boundary_map(gt), boundary_by_definition(gt))
            for th in (0.008, 0.05, 2):
                assert boundary_f(pred, gt, th) == pytest.approx(f_by_definition(pred, gt, th), abs=1e-12)


def test_region_similarity_cases():
    a = np.zeros((5, 5), bool)
    b = a.copy()
    assert region_similarity(a, b) == 1.0  # both empty
    b[1:3, 1:3] = True
    assert region_similarity(a, b) == 0.0
    a[1:3, 1:4] = True
    assert region_similarity(a, b) == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="sizes differ"):
        region_similarity(a, np.zeros((4, 5), bool))


def test_boundary_f_cases():
    empty = np.zeros((30, 40), bool)
    box = empty.copy()
    box[5:20, 10:30] = True
    assert boundary_f(empty, empty) == 1.0
    assert boundary_f(box, empty) == 0.0 and boundary_f(empty, box) == 0.0
    assert boundary_f(box, box) == 1.0
    assert boundary_tolerance((480, 854)) == 8  # ceil(0.008 * 979.6)
    shifted = np.roll(box, 1, axis=1)  # within the 1-pixel tolerance of a 30x40 image
    assert boundary_f(shifted, box) == 1.0
    far = np.roll(box, 5, axis=0)
    assert 0 < boundary_f(far, box) < 1


def _write(path, mask):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), mask.astype(np.uint8) * 255)


def test_folder_eval_scores_and_reports_every_problem(tmp_path):
    rng = np.random.default_rng(0)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    masks = {f"vid{v}/{e}": [blob(rng, 24, 32) for _ in range(3)] for v in range(2) for e in range(2)}
    for seq, ms in masks.items():
        for i, m in enumerate(ms):
            _write(gt / seq / f"{i:05d}.png", m)
            _write(pred / seq / f"{i:05d}.png", m)
    report = evaluate_folders(pred, gt).as_dict()
    assert report["J"] == 100 and report["F"] == 100 and report["J&F"] == 100
    assert set(report["per_sequence"]) == set(masks) and report["frames"] == 12 and report["problems"] == {}

    (pred / "vid0/0/00001.png").unlink()                         # missing frame -> empty prediction
    _write(pred / "vid0/0/00009.png", masks["vid0/0"][0])        # extra frame -> not scored
    _write(pred / "vid1/0/00000.png", np.ones((10, 10), bool))   # wrong size -> empty prediction
    (pred / "vid1/1/00002.png").write_bytes(b"not a png")        # unreadable -> empty prediction
    for f in (pred / "vid0/1").iterdir():                        # missing sequence
        f.unlink()
    _write(pred / "other/0/00000.png", masks["vid0/0"][0])       # extra sequence
    report = evaluate_folders(pred, gt).as_dict()
    p = report["problems"]
    assert p["missing_frames"] == ["vid0/0/00001"] and p["extra_frames"] == ["vid0/0/00009"]
    assert p["size_mismatch"] == [{"frame": "vid1/0/00000", "pred": [10, 10], "gt": [24, 32]}]
    assert len(p["unreadable"]) == 1 and "vid1/1/00002" in p["unreadable"][0]
    assert p["missing_sequences"] == ["vid0/1"] and p["extra_sequences"] == ["other/0"]
    seqs = report["per_sequence"]
    assert set(seqs) == set(masks)  # every ground-truth sequence is scored, none skipped
    empty_gt = [100.0 * (not m.any()) for m in masks["vid0/1"]]  # an empty prediction scores only there
    assert seqs["vid0/1"]["J"] == pytest.approx(np.mean(empty_gt), abs=1e-3)
    assert seqs["vid0/0"]["J"] == pytest.approx(np.mean([100, 100.0 * (not masks["vid0/0"][1].any()), 100]), abs=1e-3)
    assert report["J"] == pytest.approx(np.mean([s["J"] for s in seqs.values()]), abs=1e-3)


def test_read_mask_palette_and_colour(tmp_path):
    idx = np.zeros((4, 5), np.uint8)
    idx[1, 2] = 3
    img = Image.fromarray(idx, mode="P")
    img.putpalette([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] + [255] * 756)  # index 3 drawn black
    img.save(tmp_path / "p.png")
    assert read_mask(tmp_path / "p.png").sum() == 1
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[0, 0, 1] = 7
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert read_mask(tmp_path / "c.png").sum() == 1


def test_no_ground_truth_is_an_error(tmp_path):
    with pytest.raises(EvalError, match="no ground-truth"):
        evaluate_folders(tmp_path, tmp_path)


def test_eval_command(tmp_path):
    gt = tmp_path / "gt"
    m = np.zeros((24, 32), bool)
    m[4:12, 6:20] = True
    _write(gt / "seq" / "00000.png", m)
    _write(gt / "seq" / "00001.png", m)
    _write(tmp_path / "pred" / "seq" / "00000.png", m)
    res = run("eval", "--pred", str(tmp_path / "pred"), "--gt", str(gt), "--quiet", "--out", str(tmp_path / "r.json"))
    out = json.loads(res.stdout)
    assert out["J"] == 50 and out["F"] == 50 and out["J&F"] == 50
    assert out["per_sequence"]["seq"]["frames"] == 2 and out["problems"]["missing_frames"] == ["seq/00001"]
    assert "1 missing frames" in res.stderr and json.loads((tmp_path / "r.json").read_text()) == out
    assert run("eval", "--pred", str(tmp_path / "pred"), "--gt", str(gt), "--quiet", "--strict", check=False).returncode == 1
    res = run("eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "nothing"), "--quiet", check=False)
    assert res.returncode == 2 and "not a folder" in res.stderr and "Traceback" not in res.stderr


def _split(tmp_path):
    """A two-video split in the Ref-YouTube-VOS/MeViS layout, made from the bundled clip."""
    import shutil

    from mpg_sam2_ros.core.config import resolve_data_path

    clip = sorted(resolve_data_path("assets/demo_clip").glob("*.png"))
    data = tmp_path / "valid"
    meta = {"videos": {}}
    for vid, files in (("vidA", clip[:8]), ("vidB", clip[4:10])):
        (data / "JPEGImages" / vid).mkdir(parents=True)
        names = []
        for i, f in enumerate(files):
            cv2.imwrite(str(data / "JPEGImages" / vid / f"{5 * i:05d}.jpg"), cv2.imread(str(f)), [cv2.IMWRITE_JPEG_QUALITY, 100])
            names.append(f"{5 * i:05d}")
        meta["videos"][vid] = {"frames": names, "expressions": {}}
    meta["videos"]["vidA"]["expressions"] = {"0": {"exp": "the red ball"}, "1": {"exp": "the blue square", "obj_id": 2}}
    meta["videos"]["vidB"]["expressions"] = {"0": {"exp": "the ball moving right"}}
    (data / "meta_expressions.json").write_text(json.dumps(meta))
    shutil.copy(data / "JPEGImages" / "vidA" / "00000.jpg", tmp_path / "probe.jpg")
    return data, meta


def test_submit_writes_the_layout_and_zip_of_the_offline_runner(tmp_path):
    import zipfile

    data, meta = _split(tmp_path)
    out = tmp_path / "sub"
    summary = json.loads(run("submit", "--data", str(data), "--out", str(out), "--clip", "4", "--quiet").stdout)
    assert summary["videos"] == 2 and summary["expressions"] == 3 and summary["masks"] == 8 * 2 + 6
    names = zipfile.ZipFile(summary["zip"]).namelist()
    expected = {f"Annotations/{v}/{e}/{f}.png" for v, m in meta["videos"].items() for e in m["expressions"] for f in m["frames"]}
    assert set(names) == expected
    m = cv2.imread(str(out / "Annotations/vidA/1/00035.png"), cv2.IMREAD_UNCHANGED)
    assert m.shape == (120, 160) and set(np.unique(m)) <= {0, 255}
    # the same masks as `segment --offline` on that video with the same expressions and clips
    seg = tmp_path / "seg"
    run("segment", "--input", str(data / "JPEGImages/vidA"), "--text", "the red ball", "--text", "the blue square",
        "--out", str(seg), "--offline", "--clip", "4", "--quiet")
    for k in range(2):
        for f in meta["videos"]["vidA"]["frames"]:
            a = cv2.imread(str(out / f"Annotations/vidA/{k}/{f}.png"), cv2.IMREAD_UNCHANGED)
            b = cv2.imread(str(seg / f"object_{k}/{f}.png"), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(a, b)
    # and its Annotations folder is what `eval` reads
    report = json.loads(run("eval", "--pred", str(out / "Annotations"), "--gt", str(out / "Annotations"), "--quiet").stdout)
    assert report["J&F"] == 100 and report["sequences"] == 3


def test_submit_skips_and_reports_bad_videos_and_expressions(tmp_path):
    data, meta = _split(tmp_path)
    (data / "JPEGImages/vidB/00010.jpg").unlink()
    meta["videos"]["vidA"]["expressions"]["2"] = {"exp": "   "}
    (data / "meta_expressions.json").write_text(json.dumps(meta))
    res = run("submit", "--data", str(data), "--out", str(tmp_path / "sub"), "--quiet", check=False)
    assert res.returncode == 1, res.stderr
    summary = json.loads(res.stdout)
    assert summary["problems"]["skipped_videos"][0].startswith("vidB: frame 00010 not found")
    assert summary["problems"]["skipped_expressions"] == ["vidA/2: command is empty"]
    assert len(list((tmp_path / "sub/Annotations/vidA/2").glob("*.png"))) == 8  # layout stays complete
    assert "skipping video vidB" in res.stderr
    (data / "meta_expressions.json").write_text("{oops")
    res = run("submit", "--data", str(data), "--out", str(tmp_path / "sub2"), "--quiet", check=False)
    assert res.returncode == 2 and "not JSON" in res.stderr
