"""Dataset loaders on tiny fixtures written here in each real format, clip sampling and
augmentation (issue 7). CPU only, no model."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mpg_sam2_ros.training.datasets import (Augment, ClipDataset, DatasetError, MeViS, RefCOCO, RefDAVIS17,
                                            RefYouTubeVOS, ReferringClip, load_plain_pickle, official_clip_indices,
                                            official_clip_plan, photometric_jitter, stream_clip_indices,
                                            swap_left_right)

from pycocotools import mask as mask_api  # noqa: E402  (a dependency of the MeViS/RefCOCO loaders)

H, W = 6, 8
PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128] + [255] * (768 - 15)


# ----- writers ---------------------------------------------------------------------------
def write_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, **({"quality": 100} if path.suffix in (".jpg", ".jpeg") else {}))


def write_label(path: Path, label: np.ndarray) -> None:
    """A palette PNG whose pixel values are the object ids."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.frombytes("P", (label.shape[1], label.shape[0]), label.astype(np.uint8).tobytes())
    im.putpalette(PALETTE)
    im.save(path)


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def solid(color) -> np.ndarray:
    return np.broadcast_to(np.array(color, np.uint8), (H, W, 3)).copy()


def random_rgb(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def block(y0, y1, x0, x1, value=1, h=H, w=W) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = value
    return m


# ----- Ref-YouTube-VOS fixture -----------------------------------------------------------
V1_NAMES = ["00000", "00005", "00010", "00015"]
V1_COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (120, 120, 120)]


def v1_label(t: int) -> np.ndarray:
    """Object 1 everywhere (moving right), object 2 only in frames 2 and 3."""
    lab = block(1, 4, t, t + 3, 1)
    if t >= 2:
        lab[4:6, 5:8] = 2
    return lab


V2_NAMES = ["1", "2", "10"]  # natural order; string order would put "10" first


def v2_label(t: int) -> np.ndarray:
    return block(0, 2 + t, 0, 2, 3)


def build_ytvos(root: Path, *, with_types: bool = True) -> Path:
    for t, (name, color) in enumerate(zip(V1_NAMES, V1_COLORS)):
        write_image(root / "JPEGImages" / "v1" / f"{name}.jpg", solid(color))
        write_label(root / "Annotations" / "v1" / f"{name}.png", v1_label(t))
    for t, name in enumerate(V2_NAMES):  # PNG frames (exact pixels), no "frames" list in the meta
        write_image(root / "JPEGImages" / "v2" / f"{name}.png", random_rgb(t))
        write_label(root / "Annotations" / "v2" / f"{name}.png", v2_label(t))
    for t, name in enumerate(["00000", "00005"]):  # v3: second annotation has the wrong size
        write_image(root / "JPEGImages" / "v3" / f"{name}.jpeg", solid((50, 60, 70)))
        write_label(root / "Annotations" / "v3" / f"{name}.png", block(0, 2, 0, 2, 1, h=H + t, w=W))
    # v_missing: a listed frame has no file; v_noann: no annotation folder
    for name in ["00000", "00005"]:
        write_image(root / "JPEGImages" / "v_missing" / f"{name}.jpg", solid((1, 2, 3)))
        write_label(root / "Annotations" / "v_missing" / f"{name}.png", block(0, 1, 0, 1))
        write_image(root / "JPEGImages" / "v_noann" / f"{name}.jpg", solid((1, 2, 3)))
    write_json(root / "meta_expressions.json", {"videos": {
        "v1": {"frames": V1_NAMES, "expressions": {
            "0": {"exp": "the cup on the left", "obj_id": "1"},
            "1": {"exp": "a dog running in", "obj_id": "2"},
            "2": {"exp": "both things", "obj_id": ["1", "2"]},
            "3": {"exp": "a ghost", "obj_id": "9"}}},
        "v2": {"expressions": {"0": {"exp": "the growing bar", "obj_id": "3"},
                               "1": {"exp": "nothing there", "obj_id": "7"}}},
        "v3": {"frames": ["00000", "00005"], "expressions": {"0": {"exp": "a square", "obj_id": "1"}}},
        "v_missing": {"frames": ["00000", "00005", "00010"], "expressions": {"0": {"exp": "x", "obj_id": "1"}}},
        "v_noann": {"frames": ["00000", "00005"], "expressions": {"0": {"exp": "y", "obj_id": "1"}}},
    }})
    if with_types:
        write_json(root / "meta.json", {"videos": {"v1": {
            "objects": {"1": {"category": "cup"}, "2": {"category": "dog"}},
            "expressions": {"0": {"type": "appearance"}, "1": {"type": "motion"}}}}})
    return root


@pytest.fixture
def ytvos(tmp_path) -> RefYouTubeVOS:
    return RefYouTubeVOS(build_ytvos(tmp_path / "ytvos"))


def expr_of(split, video, exp_id):
    return next(e for e in split.video(video).expressions if e.exp_id == exp_id)


def test_ytvos_records_types_and_problems(ytvos, tmp_path):
    root = tmp_path / "ytvos"
    assert [v.video for v in ytvos.videos] == ["v1", "v2", "v3"]
    assert ytvos.video("v1").frame_names == V1_NAMES
    assert ytvos.video("v2").frame_names == V2_NAMES
    assert ytvos.video("v2").frame_paths[2] == root / "JPEGImages" / "v2" / "10.png"
    assert ytvos.video("v3").frame_paths[0].suffix == ".jpeg"
    exprs = ytvos.expressions()
    assert [(e.video, e.exp_id) for e in exprs] == [("v1", "0"), ("v1", "1"), ("v1", "2"), ("v2", "0"), ("v2", "1"),
                                                     ("v3", "0")]
    e0, e1, e2 = exprs[:3]
    assert (e0.text, e0.obj_ids, e0.exp_type) == ("the cup on the left", (1,), "appearance")
    assert (e1.obj_ids, e1.exp_type) == ((2,), "motion")
    assert (e2.obj_ids, e2.exp_type) == ((1, 2), None)
    assert expr_of(ytvos, "v2", "0").exp_type is None
    # three skips, each naming its file
    assert len(ytvos.problems) == 3, ytvos.problems
    missing = next(p for p in ytvos.problems if "v_missing" in p)
    assert str(root / "JPEGImages" / "v_missing" / "00010.jpg") in missing
    noann = next(p for p in ytvos.problems if "v_noann" in p)
    assert str(root / "Annotations" / "v_noann") in noann
    ghost = next(p for p in ytvos.problems if "expression 3" in p)
    assert str(root / "meta.json") in ghost and "[9]" in ghost
    with pytest.raises(KeyError, match="v_missing"):
        ytvos.video("v_missing")


def test_ytvos_frames_and_masks_exact(ytvos):
    clip = ytvos.read_clip(expr_of(ytvos, "v1", "0"))
    assert isinstance(clip, ReferringClip)
    assert clip.frames.shape == (4, H, W, 3) and clip.frames.dtype == np.uint8
    assert clip.masks.shape == (4, H, W) and clip.masks.dtype == bool
    assert clip.frame_names == V1_NAMES and clip.text == "the cup on the left" and clip.exp_type == "appearance"
    for t, color in enumerate(V1_COLORS):  # JPEG: solid colours survive within a few levels
        assert np.abs(clip.frames[t].astype(int) - np.array(color)).max() <= 3
        np.testing.assert_array_equal(clip.masks[t], v1_label(t) == 1)
    dog = ytvos.read_clip(expr_of(ytvos, "v1", "1"))
    np.testing.assert_array_equal(dog.present, [False, False, True, True])
    np.testing.assert_array_equal(dog.masks[3], v1_label(3) == 2)
    both = ytvos.expression_masks(expr_of(ytvos, "v1", "2"), [3, 0, 3])
    np.testing.assert_array_equal(both, np.stack([v1_label(3) > 0, v1_label(0) > 0, v1_label(3) > 0]))
    sub = ytvos.read_clip(expr_of(ytvos, "v1", "0"), [3, 1])
    assert sub.frame_names == ["00015", "00005"]
    np.testing.assert_array_equal(sub.masks[0], v1_label(3) == 1)
    # PNG frames come back bit-exact
    bar = ytvos.read_clip(expr_of(ytvos, "v2", "0"))
    for t in range(3):
        np.testing.assert_array_equal(bar.frames[t], random_rgb(t))
        np.testing.assert_array_equal(bar.masks[t], v2_label(t) == 3)
    with pytest.raises(IndexError):
        ytvos.read_clip(expr_of(ytvos, "v1", "0"), [4])


def test_ytvos_id_in_no_annotation_raises_naming_folder(ytvos, tmp_path):
    expr = expr_of(ytvos, "v2", "1")  # obj 7; no meta.json entry for v2, so found at read time
    with pytest.raises(DatasetError, match="occur in no annotation") as exc:
        ytvos.expression_masks(expr, [0])
    assert str(tmp_path / "ytvos" / "Annotations" / "v2") in str(exc.value)


def test_ytvos_id_check_without_meta_json(tmp_path):
    split = RefYouTubeVOS(build_ytvos(tmp_path / "y", with_types=False))
    assert all(e.exp_type is None for e in split.expressions())
    ghost = expr_of(split, "v1", "3")  # loads without meta.json objects ...
    assert split.expression_masks(expr_of(split, "v1", "1"), [0]).sum() == 0  # absent in frame 0 is fine
    with pytest.raises(DatasetError, match="occur in no annotation"):  # ... but id 9 occurs nowhere
        split.expression_masks(ghost, [0, 1])


def test_ytvos_mask_of_other_size_raises_naming_png(ytvos, tmp_path):
    expr = expr_of(ytvos, "v3", "0")
    assert ytvos.expression_masks(expr, [0]).shape == (1, H, W)
    with pytest.raises(DatasetError) as exc:
        ytvos.read_clip(expr)
    assert str(tmp_path / "ytvos" / "Annotations" / "v3" / "00005.png") in str(exc.value)


def test_ytvos_frame_deleted_after_load_raises_naming_file(ytvos, tmp_path):
    path = tmp_path / "ytvos" / "JPEGImages" / "v1" / "00010.jpg"
    path.unlink()
    with pytest.raises(DatasetError) as exc:
        ytvos.read_frames(ytvos.video("v1"), [0, 2])
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("name", ["meta_expressions.json", "meta.json"])
def test_ytvos_corrupt_meta_raises_naming_file(tmp_path, name):
    root = build_ytvos(tmp_path / "y")
    (root / name).write_text('{"videos": {"v1": ')
    with pytest.raises(DatasetError) as exc:
        RefYouTubeVOS(root)
    assert str(root / name) in str(exc.value)


def test_ytvos_missing_meta_raises(tmp_path):
    with pytest.raises(DatasetError, match="meta_expressions.json"):
        RefYouTubeVOS(tmp_path)


def test_ytvos_valid_split_and_overridden_locations(tmp_path):
    """Ref-YouTube-VOS keeps meta_expressions apart and valid has no annotations."""
    src = build_ytvos(tmp_path / "src")
    root = tmp_path / "valid"
    (root / "frames").mkdir(parents=True)
    (src / "JPEGImages" / "v1").rename(root / "frames" / "v1")
    meta = tmp_path / "meta_expressions" / "valid" / "meta_expressions.json"
    write_json(meta, {"videos": {"v1": {"frames": V1_NAMES, "expressions": {"0": {"exp": "the cup"}}}}})
    split = RefDAVIS17(root, meta=meta, frames_dir=root / "frames")
    assert isinstance(split, RefYouTubeVOS) and split.problems == []
    (expr,) = split.expressions()
    assert expr.obj_ids == () and expr.exp_type is None
    assert split.read_frames(split.video("v1"), [0, 3]).shape == (2, H, W, 3)
    with pytest.raises(DatasetError) as exc:
        split.read_clip(expr)
    assert str(root / "Annotations") in str(exc.value)
    with pytest.raises(DatasetError, match="annotation folder not found"):
        RefYouTubeVOS(root, meta=meta, frames_dir=root / "frames", annotations_dir=root / "nope")


def test_ytvos_frames_without_list_accept_jpg_jpeg_png(tmp_path):
    root = tmp_path / "y"
    for name, suffix in [("a1", ".jpg"), ("a2", ".jpeg"), ("a10", ".png")]:
        write_image(root / "JPEGImages" / "v" / f"{name}{suffix}", solid((9, 9, 9)))
    (root / "JPEGImages" / "v" / "notes.txt").write_text("not a frame")
    write_json(root / "meta_expressions.json", {"videos": {"v": {"expressions": {"0": {"exp": "z"}}}}})
    split = RefYouTubeVOS(root)
    assert split.video("v").frame_names == ["a1", "a2", "a10"]
    assert [p.suffix for p in split.video("v").frame_paths] == [".jpg", ".jpeg", ".png"]


# ----- MeViS fixture ---------------------------------------------------------------------
M_NAMES = ["00000", "00001", "00002", "00003", "00004"]


def rle(mask: np.ndarray) -> dict:
    enc = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in enc["size"]], "counts": enc["counts"].decode("ascii")}


def m_mask(anno: int, t: int) -> np.ndarray | None:
    if anno == 10:
        return block(0, 3, t, t + 2) > 0
    if anno == 11:
        return None if t in (0, 4) else block(3, 6, 4, 8) > 0
    raise KeyError(anno)


def build_mevis(root: Path, *, with_masks: bool = True) -> Path:
    for t, name in enumerate(M_NAMES):
        write_image(root / "JPEGImages" / "m1" / f"{name}.jpg", solid((10 * t, 100, 200)))
    for name in M_NAMES[:2]:
        write_image(root / "JPEGImages" / "m_missing" / f"{name}.jpg", solid((0, 0, 0)))
    write_json(root / "meta_expressions.json", {"videos": {
        "m1": {"frames": M_NAMES, "expressions": {
            "0": {"exp": "the bird flying away", "obj_id": [0], "anno_id": [10]},
            "1": {"exp": "two birds", "obj_id": [0, 1], "anno_id": [10, 11]},
            "2": {"exp": "the cat that is not there", "obj_id": [2], "anno_id": [99]}}},
        "m_missing": {"frames": M_NAMES, "expressions": {"0": {"exp": "x", "obj_id": [0], "anno_id": [12]}}},
    }})
    if with_masks:
        md = {str(a): [None if m_mask(a, t) is None else rle(m_mask(a, t)) for t in range(5)] for a in (10, 11)}
        md["12"] = [rle(block(0, 1, 0, 1) > 0)] * 5
        write_json(root / "mask_dict.json", md)
    return root


def test_mevis_masks_union_absent_and_problems(tmp_path):
    root = build_mevis(tmp_path / "mevis")
    split = MeViS(root)
    assert [v.video for v in split.videos] == ["m1"]
    assert [(e.exp_id, e.obj_ids) for e in split.expressions()] == [("0", (10,)), ("1", (10, 11))]
    assert len(split.problems) == 2, split.problems
    assert any(str(root / "mask_dict.json") in p and "99" in p for p in split.problems)
    assert any(str(root / "JPEGImages" / "m_missing" / "00002.jpg") in p for p in split.problems)
    one = split.read_clip(expr_of(split, "m1", "0"))
    assert one.frames.shape == (5, H, W, 3) and one.text == "the bird flying away" and one.exp_type is None
    for t in range(5):
        np.testing.assert_array_equal(one.masks[t], m_mask(10, t))
    two = split.read_clip(expr_of(split, "m1", "1"), [0, 2, 4])
    for k, t in enumerate([0, 2, 4]):
        expect = m_mask(10, t) | (m_mask(11, t) if m_mask(11, t) is not None else False)
        np.testing.assert_array_equal(two.masks[k], expect)
    assert two.masks[0].sum() == 6 and two.masks[1].sum() == 6 + 12  # None = absent; union elsewhere
    np.testing.assert_array_equal(split.frame_presence(expr_of(split, "m1", "1")), np.ones(5, bool))


def test_mevis_rle_of_other_size_raises_naming_mask_dict(tmp_path):
    root = build_mevis(tmp_path / "mevis")
    md = json.loads((root / "mask_dict.json").read_text())
    md["10"][3] = rle(np.ones((H + 1, W), bool))
    write_json(root / "mask_dict.json", md)
    split = MeViS(root)
    expr = expr_of(split, "m1", "0")
    assert split.expression_masks(expr, [2]).shape == (1, H, W)
    with pytest.raises(DatasetError) as exc:
        split.expression_masks(expr, [3])
    assert str(root / "mask_dict.json") in str(exc.value)


def test_mevis_valid_split_without_masks(tmp_path):
    root = build_mevis(tmp_path / "valid", with_masks=False)
    split = MeViS(root)
    assert [e.exp_id for e in split.expressions()] == ["0", "1", "2"]
    assert split.read_frames(split.video("m1"), [1]).shape == (1, H, W, 3)
    with pytest.raises(DatasetError) as exc:
        split.read_clip(split.expressions()[0])
    assert str(root / "mask_dict.json") in str(exc.value)


def test_mevis_corrupt_mask_dict_raises_at_construction(tmp_path):
    root = build_mevis(tmp_path / "mevis")
    (root / "mask_dict.json").write_text("not json")
    with pytest.raises(DatasetError) as exc:
        MeViS(root)
    assert str(root / "mask_dict.json") in str(exc.value)


# ----- RefCOCO fixture -------------------------------------------------------------------
# annotation 201: uncompressed RLE (column-major runs from background) of columns 3-4, rows 2-4
# in a 10 x 12 image: flat indices 32-34 and 42-44.
RLE_201 = {"size": [10, 12], "counts": [32, 3, 7, 3, 75]}


def mask_201() -> np.ndarray:
    m = np.zeros((10, 12), bool)
    m[2:5, 3:5] = True
    return m


def mask_200() -> np.ndarray:
    m = np.zeros((10, 12), bool)
    m[5:9, 6:11] = True
    m[0, 0] = True
    return m


def build_refcoco(root: Path, *, images_dir: str = "images/train2014", dataset: str = "refcoco",
                  split_by: str = "unc") -> Path:
    files = {1: "COCO_train2014_000000000001.jpg", 2: "COCO_train2014_000000000002.jpg", 3: "COCO_train2014_3.jpg"}
    write_image(root / images_dir / files[1], random_rgb(1, H, W))
    write_image(root / images_dir / files[2], random_rgb(2, 10, 12))  # image 3 is never written
    write_json(root / dataset / "instances.json", {
        "images": [{"id": 1, "file_name": files[1], "height": H, "width": W},
                   {"id": 2, "file_name": files[2], "height": 10, "width": 12},
                   {"id": 3, "file_name": files[3], "height": 4, "width": 4}],
        "annotations": [
            {"id": 100, "image_id": 1, "iscrowd": 0, "segmentation": [[2, 1, 6, 1, 6, 4, 2, 4]]},
            {"id": 200, "image_id": 2, "iscrowd": 0, "segmentation": rle(mask_200())},
            {"id": 201, "image_id": 2, "iscrowd": 1, "segmentation": RLE_201},
            {"id": 300, "image_id": 3, "iscrowd": 0, "segmentation": [[0, 0, 2, 0, 2, 2]]}],
        "categories": [{"id": 1, "name": "thing"}]})
    refs = [
        {"ref_id": 0, "ann_id": 100, "image_id": 1, "split": "train", "category_id": 1,
         "sentences": [{"sent": "the box on the left", "sent_id": 0}, {"sent": "a grey box", "sent_id": 1}]},
        {"ref_id": 1, "ann_id": 200, "image_id": 2, "split": "train", "sentences": [{"sent": "the big one"}]},
        {"ref_id": 2, "ann_id": 201, "image_id": 2, "split": "val", "sentences": [{"sent": "the small one"}]},
        {"ref_id": 3, "ann_id": 999, "image_id": 1, "split": "train", "sentences": [{"sent": "lost"}]},
        {"ref_id": 4, "ann_id": 300, "image_id": 3, "split": "train", "sentences": [{"sent": "no image"}]},
    ]
    with open(root / dataset / f"refs({split_by}).p", "wb") as f:
        pickle.dump(refs, f)
    return root


def test_refcoco_records_masks_and_problems(tmp_path):
    root = build_refcoco(tmp_path / "coco")
    split = RefCOCO(root)
    assert [v.video for v in split.videos] == ["1", "2"]
    v1 = split.video("1")
    assert v1.frame_names == ["COCO_train2014_000000000001"] and len(v1) == 1
    assert [(e.exp_id, e.text, e.obj_ids) for e in split.expressions()] == [
        ("0_0", "the box on the left", (100,)), ("0_1", "a grey box", (100,)), ("1_0", "the big one", (200,))]
    assert len(split.problems) == 2, split.problems
    assert any("999" in p and str(root / "refcoco" / "instances.json") in p for p in split.problems)
    assert any(str(root / "images" / "train2014" / "COCO_train2014_3.jpg") in p for p in split.problems)
    poly = split.read_clip(split.expressions()[0])
    assert poly.frames.shape == (1, H, W, 3) and poly.frame_names == ["COCO_train2014_000000000001"]
    expect = np.zeros((H, W), bool)
    expect[1:4, 2:6] = True  # the 4 x 3 rectangle (area 12) of the polygon
    np.testing.assert_array_equal(poly.masks[0], expect)
    big = split.read_clip(split.expressions()[2])
    np.testing.assert_array_equal(big.masks[0], mask_200())
    val = RefCOCO(root, split="val")
    (small,) = val.expressions()
    np.testing.assert_array_equal(val.read_clip(small).masks[0], mask_201())
    assert len(RefCOCO(root, split=None).expressions()) == 4


def test_refcoco_prefers_json_and_alternative_image_root(tmp_path):
    root = build_refcoco(tmp_path / "coco", images_dir="train2014", dataset="refcocog", split_by="umd")
    write_json(root / "refcocog" / "refs(umd).json", [
        {"ref_id": 7, "ann_id": 100, "image_id": 1, "split": "train", "sentences": [{"sent": "from json"}]}])
    split = RefCOCO(root, dataset="refcocog")
    assert [(e.exp_id, e.text) for e in split.expressions()] == [("7_0", "from json")]
    assert split.refs_path.name == "refs(umd).json"
    assert split.video("1").frame_paths[0] == root / "train2014" / "COCO_train2014_000000000001.jpg"


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_refcoco_refuses_malicious_pickle(tmp_path):
    root = build_refcoco(tmp_path / "coco")
    target = tmp_path / "pwned"
    refs_path = root / "refcoco" / "refs(unc).p"
    refs_path.write_bytes(pickle.dumps([{"ref_id": 0, "payload": _Evil(target)}]))
    assert b"system" in refs_path.read_bytes()
    with pytest.raises(DatasetError) as exc:
        RefCOCO(root)
    assert str(refs_path) in str(exc.value) and "system" in str(exc.value)
    assert not target.exists()
    other = tmp_path / "path.p"
    other.write_bytes(pickle.dumps({"p": Path("/tmp")}))  # any class at all is refused
    with pytest.raises(DatasetError, match="path.p"):
        load_plain_pickle(other)
    plain = tmp_path / "plain.p"
    plain.write_bytes(pickle.dumps({"a": [1, 2.5, "x", None, True, (3, 4)], "b": {1, 2}, "c": b"raw"}))
    assert load_plain_pickle(plain) == {"a": [1, 2.5, "x", None, True, (3, 4)], "b": {1, 2}, "c": b"raw"}
    truncated = tmp_path / "cut.p"
    truncated.write_bytes(plain.read_bytes()[:10])
    with pytest.raises(DatasetError, match="cut.p"):
        load_plain_pickle(truncated)


def test_refcoco_image_size_mismatch_and_corrupt_instances(tmp_path):
    root = build_refcoco(tmp_path / "coco")
    img = root / "images" / "train2014" / "COCO_train2014_000000000001.jpg"
    write_image(img, random_rgb(1, H + 2, W))
    split = RefCOCO(root)
    with pytest.raises(DatasetError) as exc:
        split.expression_masks(split.expressions()[0], [0])
    assert str(img) in str(exc.value)
    (root / "refcoco" / "instances.json").write_text("{broken")
    with pytest.raises(DatasetError, match="instances.json"):
        RefCOCO(root)


# ----- sampling --------------------------------------------------------------------------
def test_official_clip_rules():
    offsets = set()
    anchors = []
    for seed in range(300):
        rng = np.random.default_rng(seed)
        n = 40
        plan = official_clip_plan(n, 5, rng)
        idx = plan.indices
        a = plan.anchor
        anchors.append(a)
        assert len(idx) == 5 and idx == sorted(idx) and all(0 <= i < n for i in idx)
        assert plan.before in {max(0, a - d) for d in (1, 2, 3)}
        assert plan.after in {min(n - 1, a + d) for d in (1, 2, 3)}
        if 3 <= a <= n - 4:
            offsets.add(a - plan.before)
            offsets.add(plan.after - a)
        # global frames: distinct, outside the local span (the video is long enough)
        assert len(set(plan.others)) == 2
        assert all(i < plan.before or i > plan.after for i in plan.others)
    assert offsets == {1, 2, 3}
    assert min(anchors) == 0 and max(anchors) == 39 and len(set(anchors)) > 30
    edge = official_clip_plan(40, 5, np.random.default_rng(0), anchor=0)
    assert edge.anchor == 0 and edge.before == 0  # clamped to the video
    assert official_clip_indices(40, 8, np.random.default_rng(1), anchor=39).count(39) >= 2


def test_official_clip_lengths_and_short_videos():
    for n in range(1, 12):
        for t in (1, 2, 3, 5, 8):
            for seed in range(20):
                idx = official_clip_indices(n, t, np.random.default_rng(seed))
                assert len(idx) == t and idx == sorted(idx) and all(0 <= i < n for i in idx), (n, t, idx)
                if n < t and t >= 3:
                    assert set(idx) == set(range(n))  # every frame of a shorter video is used
    assert official_clip_indices(1, 5, np.random.default_rng(0)) == [0] * 5
    plan = official_clip_plan(10, 2, np.random.default_rng(3), anchor=5)
    assert len(plan.indices) == 2 and (plan.before is None) != (plan.after is None)
    assert official_clip_indices(10, 1, np.random.default_rng(0), anchor=7) == [7]
    with pytest.raises(ValueError):
        official_clip_indices(0, 5, np.random.default_rng(0))
    with pytest.raises(ValueError):
        official_clip_indices(5, 0, np.random.default_rng(0))
    with pytest.raises(ValueError):
        official_clip_indices(5, 3, np.random.default_rng(0), anchor=5)


def test_stream_clip_indices():
    starts = set()
    for seed in range(200):
        idx = stream_clip_indices(20, 8, np.random.default_rng(seed))
        assert len(idx) == 8 and idx == list(range(idx[0], idx[0] + 8)) and idx[-1] < 20
        starts.add(idx[0])
        with_anchor = stream_clip_indices(20, 8, np.random.default_rng(seed), anchor=2)
        assert 2 in with_anchor and len(with_anchor) == 8
    assert starts == set(range(13))
    assert stream_clip_indices(3, 6, np.random.default_rng(0)) == [0, 1, 2, 2, 2, 2]
    assert stream_clip_indices(8, 8, np.random.default_rng(0)) == list(range(8))


LONG = 30


def build_long(root: Path) -> Path:
    """One 30-frame video: object 1 in every frame, object 2 only in frame 17."""
    names = [f"{t:05d}" for t in range(LONG)]
    for t, name in enumerate(names):
        write_image(root / "JPEGImages" / "long" / f"{name}.png", solid((t * 8, 0, 255 - t * 8)))
        lab = block(0, 2, 0, 2, 1)
        if t == 17:
            lab[4:6, 6:8] = 2
        write_label(root / "Annotations" / "long" / f"{name}.png", lab)
    write_json(root / "meta_expressions.json", {"videos": {"long": {"frames": names, "expressions": {
        "0": {"exp": "the square on the left", "obj_id": "1"}, "1": {"exp": "the flash", "obj_id": "2"}}}}})
    return root


@pytest.fixture
def long_split(tmp_path) -> RefYouTubeVOS:
    return RefYouTubeVOS(build_long(tmp_path / "long"))


def clip_key(clip: ReferringClip):
    return (clip.exp_id, tuple(clip.frame_names), clip.text, clip.frames.tobytes(), clip.masks.tobytes())


def test_clip_dataset_deterministic_per_seed_epoch_index(long_split):
    ds = ClipDataset(long_split, num_frames=5, augment=Augment(), seed=3)
    assert len(ds) == 2
    first = [clip_key(ds[i]) for i in range(2)]
    again = ClipDataset(long_split, num_frames=5, augment=Augment(), seed=3)
    assert [clip_key(again[i]) for i in (1, 0)] == first[::-1]  # independent of order / instance
    assert clip_key(ds[-2]) == first[0]
    ds.set_epoch(1)
    assert [clip_key(ds[i]) for i in range(2)] != first
    ds.set_epoch(0)
    assert [clip_key(ds[i]) for i in range(2)] == first
    other_seed = ClipDataset(long_split, num_frames=5, augment=Augment(), seed=4)
    assert [clip_key(other_seed[i]) for i in range(2)] != first
    clip = ds[0]
    assert len(clip) == 5 and clip.frame_names == sorted(clip.frame_names)
    with pytest.raises(IndexError):
        ds[2]


@pytest.mark.parametrize("max_resample", [0, 3, 10])
def test_clip_dataset_resamples_until_object_present(long_split, max_resample):
    ds = ClipDataset(long_split, num_frames=3, seed=0, max_resample=max_resample)
    flash = 1  # object 2 is in frame 17 only: a random 3-frame clip usually misses it
    misses = sum(not official_clip_indices(LONG, 3, np.random.default_rng([0, e, flash])).count(17) for e in range(12))
    assert misses > 0  # the plain first draw would miss at least once in these epochs
    for epoch in range(12):
        ds.set_epoch(epoch)
        clip = ds[flash]
        assert clip.present.any() and "00017" in clip.frame_names
        assert clip.present.tolist() == [n == "00017" for n in clip.frame_names]


def test_clip_dataset_stream_and_grid(long_split):
    ds = ClipDataset(long_split, num_frames=8, sampler="stream", seed=1)
    for i in range(len(ds)):
        clip = ds[i]
        ids = [int(n) for n in clip.frame_names]
        assert ids == list(range(ids[0], ids[0] + 8))
        assert clip.present.any()
    grid = ClipDataset(long_split, num_frames=5, anchors="grid")
    assert len(grid) == 2 * 6 and [grid.item(k)[1] for k in range(6)] == [0, 5, 10, 15, 20, 25]
    assert "00010" in grid[2].frame_names
    with pytest.raises(ValueError):
        ClipDataset(long_split, num_frames=5, sampler="shuffle")
    import torch.utils.data

    loader = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False)
    assert [c.exp_id for c in loader] == ["0", "1"]


def test_clip_dataset_on_mevis_and_refcoco(tmp_path):
    mevis = ClipDataset(MeViS(build_mevis(tmp_path / "m")), num_frames=8)
    clip = mevis[1]
    assert clip.frames.shape == (8, H, W, 3) and set(clip.frame_names) == set(M_NAMES)
    coco = ClipDataset(RefCOCO(build_refcoco(tmp_path / "c")), num_frames=1, augment=Augment(resize=(16, 16)))
    assert len(coco) == 3
    c = coco[2]
    assert c.frames.shape == (1, 16, 16, 3) and c.masks.shape == (1, 16, 16) and c.present.all()


# ----- augmentation ----------------------------------------------------------------------
def test_swap_left_right():
    assert swap_left_right("the cup on the left") == "the cup on the right"
    assert swap_left_right("Left of the RIGHT one, right?") == "Right of the LEFT one, left?"
    assert swap_left_right("the leftmost dog's left-hand paw") == "the rightmost dog's right-hand paw"
    assert swap_left_right("a lefthanded player moving rightwards") == "a righthanded player moving leftwards"
    for keep in ("a bright leftover", "rightly so", "the copyright", "no direction"):
        assert swap_left_right(keep) == keep


def make_clip(text: str = "the cup on the left", t: int = 3) -> ReferringClip:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (t, H, W, 3), dtype=np.uint8)
    masks = np.zeros((t, H, W), bool)
    masks[:, 1:3, 0:2] = True
    return ReferringClip(video="v", exp_id="0", text=text, exp_type=None, frame_names=[str(i) for i in range(t)],
                         frames=frames, masks=masks)


def test_flip_mirrors_frames_masks_and_text_together():
    clip = make_clip()
    out = Augment(hflip=1.0, photometric=False)(clip, np.random.default_rng(0))
    np.testing.assert_array_equal(out.frames, clip.frames[:, :, ::-1])
    np.testing.assert_array_equal(out.masks, clip.masks[:, :, ::-1])
    assert out.masks[:, 1:3, W - 2:].all() and out.masks.sum() == clip.masks.sum()
    assert out.text == "the cup on the right" and clip.text == "the cup on the left"
    same = Augment(hflip=0.0, photometric=False)(clip, np.random.default_rng(0))
    np.testing.assert_array_equal(same.frames, clip.frames)
    assert same.text == clip.text
    flips = [Augment(hflip=0.5, photometric=False)(clip, np.random.default_rng(s)).text for s in range(40)]
    assert 5 < flips.count("the cup on the right") < 35


def test_photometric_same_for_all_frames():
    grad = np.tile(np.linspace(20, 235, W, dtype=np.uint8)[None, :, None], (H, 1, 3))
    grad[..., 1] //= 2
    frames = np.stack([grad] * 4)
    out = photometric_jitter(frames, np.random.default_rng(5))
    assert out.dtype == np.uint8 and out.shape == frames.shape
    assert all(np.array_equal(out[0], out[t]) for t in range(1, 4))
    assert not np.array_equal(out, frames)
    assert np.abs(out.astype(int) - frames).max() < 80  # small ranges
    clip = make_clip()
    a = Augment(hflip=0.0)(clip, np.random.default_rng(9))
    b = Augment(hflip=0.0)(clip, np.random.default_rng(9))
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.masks, clip.masks)


def test_resize_bilinear_frames_nearest_masks():
    clip = make_clip(t=2)
    out = Augment(hflip=0.0, photometric=False, resize=(2 * H, 2 * W))(clip, np.random.default_rng(0))
    assert out.frames.shape == (2, 2 * H, 2 * W, 3) and out.frames.dtype == np.uint8
    np.testing.assert_array_equal(out.masks, clip.masks.repeat(2, axis=1).repeat(2, axis=2))
    flat = make_clip(t=1)
    flat.frames[:] = 77
    assert (Augment(hflip=0.0, photometric=False, resize=(5, 3))(flat, np.random.default_rng(0)).frames == 77).all()
    with pytest.raises(ValueError):
        Augment(resize=(0, 4))
    with pytest.raises(ValueError):
        Augment(hflip=1.5)


def test_clip_validates_shapes():
    clip = make_clip()
    with pytest.raises(ValueError, match="masks"):
        ReferringClip(video="v", exp_id="0", text="x", exp_type=None, frame_names=["0", "1", "2"],
                      frames=clip.frames, masks=clip.masks[:, :-1])
    with pytest.raises(ValueError, match="frame names"):
        ReferringClip(video="v", exp_id="0", text="x", exp_type=None, frame_names=["0"],
                      frames=clip.frames, masks=clip.masks)
