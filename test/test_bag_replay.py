"""bag-replay on real bags written here with rosbags (sqlite3 and mcap, raw and compressed images,
split bags, a stamp loop, a corrupt message, ground truth as PNGs and as a topic), read back
with rosbags; the live mode against the real node over DDS. The model is cpu_small with random
weights (deterministic), so the checks are about the data path, not about accuracy."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mpg_sam2_ros.core.evaluation import evaluate_folders, read_mask
from mpg_sam2_ros.replay.bags import InputBag, deserialize, stamp_name, write_image_bag
from mpg_sam2_ros.replay.run import ReplayOptions, run_bag_replay

EXE = Path(sys.executable).parent / "mpg-sam2"
TEXTS = ["the red circle", "the blue square"]
H, W, T = 48, 64, 8


def frames_and_labels(t=T, seed=0):
    """Moving coloured shapes: label 1 = a red disc moving right, 2 = a blue square (absent in
    the first two frames, so some ground truth is empty)."""
    rng = np.random.default_rng(seed)
    frames, labels = [], []
    yy, xx = np.mgrid[:H, :W]
    for i in range(t):
        img = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
        lab = np.zeros((H, W), np.uint8)
        disc = (yy - 20) ** 2 + (xx - 10 - 4 * i) ** 2 < 36
        lab[disc] = 1
        if i >= 2:
            lab[30:40, 40:50] = 2
        img[lab == 1] = (220, 30, 30)
        img[lab == 2] = (30, 30, 220)
        frames.append(img)
        labels.append(lab)
    return frames, labels


def replay(bag, out, texts=TEXTS, **kw) -> dict:
    kw.setdefault("config", "cpu_small")
    kw.setdefault("progress", False)
    return run_bag_replay(ReplayOptions(bag=str(bag), texts=list(texts), out=str(out), **kw), log=lambda m: None)


def cli(*args):
    cmd = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "mpg_sam2_ros.cli"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd + ["bag-replay", *args], capture_output=True, text=True, timeout=300, env=env)


def read_topic(bag_path, topic):
    with InputBag(bag_path) as bag:
        typ = bag.msgtype(topic)
        return [(m.recv_ns, deserialize(m.raw, typ)) for m in bag.messages(topic)]


@pytest.fixture(scope="module")
def video():
    return frames_and_labels()


@pytest.fixture(scope="module")
def gt_dir(tmp_path_factory, video):
    """object_K/<stamp>.png for the default receive-time stamps (10 Hz)."""
    root = tmp_path_factory.mktemp("gt")
    from mpg_sam2_ros.core.io import write_mask

    start = 1_700_000_000 * 10**9
    for i, lab in enumerate(video[1]):
        ns = start + i * 100_000_000
        for k in range(2):
            write_mask(root / f"object_{k}" / f"{stamp_name((ns // 10**9, ns % 10**9))}.png", lab == k + 1)
    return root


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_round_trip_result_bag_masks_and_eval_agree(tmp_path, video, gt_dir, storage):
    frames, _ = video
    bag = write_image_bag(tmp_path / "in", frames, storage=storage)
    s = replay(bag, tmp_path / "out", gt=str(gt_dir))
    assert s["storage"] == storage and s["frames"] == {"read": T, "skipped": 0, "processed": T, "dropped": 0, "outputs": T}
    assert s["pacing"]["realtime"] is False and s["problems"] == {}
    # the result bag: same storage, the input topic, one mask and one segmentation per frame with its stamp
    res = tmp_path / "out" / "result_bag"
    with InputBag(res) as rb:
        assert rb.storage == storage
        assert rb.topics == {"/camera/image_raw": ("sensor_msgs/msg/Image", T), "/mask": ("sensor_msgs/msg/Image", T),
                             "/segmentation": ("mpg_sam2_ros/msg/Segmentation", T)}
    inputs = read_topic(bag, "/camera/image_raw")
    segs = read_topic(res, "/segmentation")
    masks = read_topic(res, "/mask")
    for (recv, img), (srecv, seg), (mrecv, mask) in zip(inputs, segs, masks):
        assert recv == srecv == mrecv
        assert (seg.header.stamp.sec, seg.header.stamp.nanosec) == (img.header.stamp.sec, img.header.stamp.nanosec)
        assert seg.header.frame_id == "camera" and (mask.height, mask.width, mask.encoding) == (H, W, "mono8")
        assert [o.text for o in seg.objects] == TEXTS and [o.object_id for o in seg.objects] == [0, 1]
        name = stamp_name((img.header.stamp.sec, img.header.stamp.nanosec))
        for o in seg.objects:  # the bag's masks are the PNGs
            png = read_mask(tmp_path / "out" / "masks" / f"object_{o.object_id}" / f"{name}.png")
            bag_mask = np.asarray(o.mask.data).reshape(H, W) > 0
            assert np.array_equal(png, bag_mask) and o.area == int(png.sum())
    # J&F equals mpg-sam2 eval on the PNGs it wrote, per object and overall
    report = evaluate_folders(tmp_path / "out" / "masks", tmp_path / "out" / "gt").as_dict()
    assert s["J&F"] == pytest.approx(report["J&F"], abs=1e-3) and s["J"] == pytest.approx(report["J"], abs=1e-3)
    for k in ("0", "1"):
        assert s["per_object"][k]["J&F"] == pytest.approx(report["per_sequence"][f"object_{k}"]["J&F"], abs=1e-3)
    assert report["problems"] == {}
    # the same through the CLI: JSON on stdout, --overwrite needed for the same folder
    assert cli("--bag", str(bag), "--text", TEXTS[0], "--out", str(tmp_path / "out"), "--config", "cpu_small").returncode == 2
    p = cli("--bag", str(bag), "--text", TEXTS[0], "--text", TEXTS[1], "--out", str(tmp_path / "out"), "--config",
            "cpu_small", "--gt", str(gt_dir), "--overwrite", "--quiet")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["J&F"] == pytest.approx(s["J&F"], abs=1e-6)
    csv = (tmp_path / "out" / "frames.csv").read_text().splitlines()
    assert len(csv) == T + 1 and csv[0].startswith("index,stamp,recv_ns,status,latency_ms,jf_object_0,jf_object_1")
    assert (tmp_path / "out" / "overlay.mp4").stat().st_size > 1000


def test_encodings_give_the_same_pixels(tmp_path, video):
    """rgb8, bgr8 and PNG-compressed hold the same pixels: identical masks; the summary names the type."""
    frames, _ = video
    outs = {}
    for enc, comp in [("rgb8", None), ("bgr8", None), ("rgb8", "png"), ("mono8", None), ("rgb8", "jpeg")]:
        tag = comp or enc
        bag = write_image_bag(tmp_path / f"in_{tag}", frames, encoding=enc, compressed=comp, storage="mcap")
        s = replay(bag, tmp_path / f"out_{tag}", texts=TEXTS[:1])
        assert s["frames"]["outputs"] == T and s["skipped_by_reason"] == {}
        assert s["image_type"] == ("sensor_msgs/msg/CompressedImage" if comp else "sensor_msgs/msg/Image")
        outs[tag] = sorted((tmp_path / f"out_{tag}" / "masks" / "object_0").glob("*.png"))
        assert len(outs[tag]) == T
    for tag in ("bgr8", "png"):
        for a, b in zip(outs["rgb8"], outs[tag]):
            assert a.name == b.name and np.array_equal(read_mask(a), read_mask(b))


def test_stamp_loop_restarts_and_corrupt_message_is_skipped(tmp_path, video):
    frames, _ = video
    stamps = [(100 + i, 0) for i in range(4)] + [(100 + i, 0) for i in range(4)]  # a bag recorded twice in a row
    ok = write_image_bag(tmp_path / "ok", frames[:1])
    raw = next(InputBag(ok).messages("/camera/image_raw")).raw
    bag = write_image_bag(tmp_path / "in", frames, stamps=stamps, extra={5: raw[: len(raw) // 3]})
    s = replay(bag, tmp_path / "out", texts=TEXTS[:1])
    assert s["frames"] == {"read": 8, "skipped": 1, "processed": 7, "dropped": 0, "outputs": 7}
    assert s["skipped_by_reason"] == {"corrupt_message": 1}
    assert s["problems"]["undecodable"]["count"] == 1
    assert s["stream_resets"] == 2  # the start, and the stamp going back from 103 to 100
    assert s["problems"]["duplicate_stamps"]["count"] == 3  # 100, 101, 103 again (102 was the corrupt one)
    segs = read_topic(tmp_path / "out" / "result_bag", "/segmentation")
    assert [seg.stream_reset for _, seg in segs] == [True, False, False, False, True, False, False]
    assert [seg.frame_index for _, seg in segs] == [0, 1, 2, 3, 0, 1, 2]
    with InputBag(tmp_path / "out" / "result_bag") as rb:  # the input copied whole, the corrupt message too
        assert [m.raw for m in rb.messages("/camera/image_raw")] == [m.raw for m in InputBag(bag).messages("/camera/image_raw")]


def test_realtime_drops_frames_like_the_node(tmp_path, video):
    frames, _ = video
    bag = write_image_bag(tmp_path / "in", frames, rate_hz=10.0)
    fast = replay(bag, tmp_path / "fast", texts=TEXTS[:1], realtime=10000.0)  # 10 us apart: the model is always busy
    f = fast["frames"]
    assert fast["pacing"] == {"realtime": True, "rate": 10000.0, "clock": fast["pacing"]["clock"]}
    assert f["read"] == T and f["dropped"] >= T - 3 and f["processed"] + f["dropped"] == T
    assert f["processed"] >= 2  # the first frame, and the newest one after the worker frees up
    rows = (tmp_path / "fast" / "frames.csv").read_text().splitlines()[1:]
    status = [r.split(",")[3] for r in rows]
    assert status[0] == "output" and status[-1] == "output" and "dropped" in status
    slow = replay(bag, tmp_path / "slow", texts=TEXTS[:1], realtime=0.001)  # 10 s apart in simulated time
    assert slow["frames"]["dropped"] == 0 and slow["frames"]["outputs"] == T
    assert slow["latency_ms"]["p50"] == pytest.approx(slow["engine_ms"]["p50"], rel=0.01)


def test_stream_policies_reach_the_engine_and_the_summary(tmp_path, video):
    """--presence-threshold and re-anchoring: the summary records the values in force (the model's
    own threshold when none is given); a higher threshold gates the masks, not the memory, so each
    mask is the one at SAM 2's rule or empty, and empty wherever the score is at or below it. The
    bundled model (random weights score every object near 0.44, absent under any threshold); the
    high threshold lies between the scores it shows at 0.5, so both sides are exercised."""
    from mpg_sam2_ros.core.pipeline import load_pipeline

    frames, _ = video
    bag = write_image_bag(tmp_path / "in", frames)
    own = load_pipeline(None, (), None).model.config.presence_threshold
    base = replay(bag, tmp_path / "base", config=None)
    assert base["policy"] == {"reanchor_after_absent": 0, "reanchor_every": 0, "presence_threshold": own}
    lo = replay(bag, tmp_path / "lo", config=None, presence_threshold=0.5)
    lo_segs = [seg for _, seg in read_topic(tmp_path / "lo" / "result_bag", "/segmentation")]
    # a threshold between the lowest and the highest score shown at 0.5 (the model's scores, not a constant)
    scores = sorted(o.score for seg in lo_segs[:4] for o in seg.objects if o.present)
    assert scores and scores[0] < scores[-1], scores
    t = round((scores[0] + scores[-1]) / 2, 4)
    hi = replay(bag, tmp_path / "hi", config=None, presence_threshold=t, reanchor_every=4)
    assert hi["policy"] == {"reanchor_after_absent": 0, "reanchor_every": 4, "presence_threshold": t}
    segs = {k: [seg for _, seg in read_topic(tmp_path / k / "result_bag", "/segmentation")] for k in ("lo", "hi")}
    assert len(segs["lo"]) == len(segs["hi"]) == T
    shown = emptied = 0
    for a, b in zip(segs["lo"][:4], segs["hi"][:4]):  # the memories agree until the first re-anchoring
        for oa, ob in zip(a.objects, b.objects):
            assert oa.score == pytest.approx(ob.score, abs=1e-5)
            ma, mb = np.asarray(oa.mask.data), np.asarray(ob.mask.data)
            assert ob.present == bool(mb.any()) and oa.present == bool(ma.any())
            if ob.score > t:
                assert np.array_equal(ma, mb)
                shown += int(mb.any())
            else:
                assert not mb.any()
                emptied += int(ma.any())
    assert shown > 0 and emptied > 0, (shown, emptied)
    for k, v in [("presence_threshold", 0.3), ("reanchor_every", -1)]:
        with pytest.raises(ValueError):
            replay(bag, tmp_path / "bad", **{k: v})
    with pytest.raises(ValueError, match="--start-node"):  # a running node's parameters are its own
        replay(bag, tmp_path / "bad", live=True, presence_threshold=0.9)
    if importlib.util.find_spec("rclpy"):  # a node started here takes at most 0.999: refused up front
        with pytest.raises(ValueError, match="--presence-threshold"):
            replay(bag, tmp_path / "bad", live=True, start_node=True, presence_threshold=0.9995)
    from mpg_sam2_ros.core.checkpoint import CheckpointError
    from mpg_sam2_ros.core.config import ConfigError

    for empty, error in (({"checkpoint": ""}, CheckpointError), ({"config": ""}, ConfigError)):
        with pytest.raises(error, match="is empty"):  # an unset shell variable: never a silent default
            replay(bag, tmp_path / "bad", live=True, start_node=True, **empty)
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_ground_truth_by_index_label_images_and_topic(tmp_path, video):
    from PIL import Image

    frames, labels = video
    flat = tmp_path / "gt_index"
    flat.mkdir()
    for i, lab in enumerate(labels):  # label images named by frame index, value K+1 = object K
        Image.fromarray(lab).save(flat / f"{i}.png")
    bag = write_image_bag(tmp_path / "in", frames, gt_topic="/gt", gt_labels=labels)
    a = replay(bag, tmp_path / "a", image_topic="/camera/image_raw", gt=str(flat))
    b = replay(bag, tmp_path / "b", image_topic="/camera/image_raw", gt_topic="/gt")
    assert a["ground_truth"]["naming"] == "index" and b["ground_truth"]["naming"] == "stamp"
    assert sorted(p.name for p in (tmp_path / "a" / "masks" / "object_0").glob("*.png"))[0] == "000000.png"
    for k in ("0", "1"):
        assert a["per_object"][k]["frames"] == T and a["per_object"][k]["J&F"] == pytest.approx(b["per_object"][k]["J&F"])
    gt1 = read_mask(tmp_path / "b" / "gt" / "object_1" / sorted(os.listdir(tmp_path / "b" / "gt" / "object_1"))[2])
    assert gt1.sum() == 100  # the blue square, from label value 2
    for name in ("a", "b"):
        report = evaluate_folders(tmp_path / name / "masks", tmp_path / name / "gt").as_dict()
        assert report["J&F"] == pytest.approx((a if name == "a" else b)["J&F"], abs=1e-3)


def _split_bag(tmp_path, frames, storage):
    """Two storage files in one folder, as ``ros2 bag record --max-bag-size`` leaves them."""
    a = write_image_bag(tmp_path / "part_a", frames[:4], storage=storage)
    b = write_image_bag(tmp_path / "part_b", frames[4:], storage=storage, start_ns=1_700_000_000 * 10**9 + 400_000_000)
    meta_a = yaml.safe_load((a / "metadata.yaml").read_text())
    meta_b = yaml.safe_load((b / "metadata.yaml").read_text())
    info_a, info_b = meta_a["rosbag2_bagfile_information"], meta_b["rosbag2_bagfile_information"]
    ext = ".db3" if storage == "sqlite3" else ".mcap"
    shutil.move(str(a / f"part_a{ext}"), str(a / f"part_a_0{ext}"))  # ros2 bag record's names
    shutil.move(str(b / f"part_b{ext}"), str(a / f"part_a_1{ext}"))
    info_a["files"][0]["path"] = f"part_a_0{ext}"
    info_a["relative_file_paths"] = [f"part_a_0{ext}", f"part_a_1{ext}"]
    info_b["files"][0]["path"] = f"part_a_1{ext}"
    info_a["files"] = info_a["files"] + info_b["files"]
    info_a["message_count"] += info_b["message_count"]
    info_a["duration"]["nanoseconds"] = info_b["starting_time"]["nanoseconds_since_epoch"] + info_b["duration"]["nanoseconds"] \
        - info_a["starting_time"]["nanoseconds_since_epoch"]
    for ta, tb in zip(info_a["topics_with_message_count"], info_b["topics_with_message_count"]):
        ta["message_count"] += tb["message_count"]
    (a / "metadata.yaml").write_text(yaml.safe_dump(meta_a))
    return a


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_split_bag_is_read_in_order(tmp_path, video, storage):
    frames, _ = video
    bag = _split_bag(tmp_path, frames, storage)
    s = replay(bag, tmp_path / "out", texts=TEXTS[:1])
    assert s["frames"]["read"] == T and s["frames"]["outputs"] == T and s["stream_resets"] == 1
    stamps = [seg.header.stamp.nanosec for _, seg in read_topic(tmp_path / "out" / "result_bag", "/segmentation")]
    assert stamps == sorted(stamps) and len(set(stamps)) == T


def test_older_metadata_version_is_read(tmp_path, video):
    """A Humble-era bag (metadata version 5: no ros_distro, no custom_data)."""
    frames, _ = video
    bag = write_image_bag(tmp_path / "in", frames[:3])
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())
    info = meta["rosbag2_bagfile_information"]
    info["version"] = 5
    for key in ("ros_distro", "custom_data"):
        info.pop(key, None)
    for t in info["topics_with_message_count"]:
        t["topic_metadata"].pop("type_description_hash", None)
        t["topic_metadata"]["offered_qos_profiles"] = ""
    (bag / "metadata.yaml").write_text(yaml.safe_dump(meta))
    s = replay(bag, tmp_path / "out", texts=TEXTS[:1])
    assert s["frames"]["outputs"] == 3


def test_interrupt_writes_a_valid_partial_result(tmp_path, video, monkeypatch):
    from mpg_sam2_ros.ros import processing

    frames, _ = video
    bag = write_image_bag(tmp_path / "in", frames)
    real = processing.FrameProcessor.process
    calls = {"n": 0}

    def interrupted(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(processing.FrameProcessor, "process", interrupted)
    s = replay(bag, tmp_path / "out", texts=TEXTS[:1])
    assert s["interrupted"] is True and s["frames"]["outputs"] == 3
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["interrupted"] is True
    assert len(read_topic(tmp_path / "out" / "result_bag", "/segmentation")) == 3


def test_bad_input_one_line_errors(tmp_path, video):
    frames, _ = video
    good = write_image_bag(tmp_path / "good", frames[:2])
    notbag = tmp_path / "notbag"
    notbag.mkdir()
    junk = tmp_path / "junk.db3"
    junk.write_bytes(b"this is not sqlite" * 10)
    unknown = tmp_path / "unknown"
    shutil.copytree(good, unknown)
    meta = (unknown / "metadata.yaml").read_text().replace("storage_identifier: sqlite3", "storage_identifier: rosbag_v9000")
    (unknown / "metadata.yaml").write_text(meta)
    empty = write_image_bag(tmp_path / "empty", [])  # the topic exists, no message
    from rosbags.rosbag2 import Writer

    from mpg_sam2_ros.replay.bags import typestore

    strings = tmp_path / "strings"
    w = Writer(strings, version=9)
    w.open()
    c = w.add_connection("/chatter", "std_msgs/msg/String", typestore=typestore())
    w.write(c, 1, bytes(typestore().serialize_cdr(typestore().types["std_msgs/msg/String"](data="hi"), "std_msgs/msg/String")))
    w.close()
    two = write_image_bag(tmp_path / "two", frames[:2], gt_topic="/gt", gt_labels=video[1][:2])
    bare = tmp_path / "bare"  # no topic at all
    w = Writer(bare, version=9)
    w.open()
    w.close()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "summary.json").write_text("{}")
    cases = [
        (["--bag", str(tmp_path / "missing")], "bag not found"),
        (["--bag", str(notbag)], "no metadata.yaml"),
        (["--bag", str(junk)], "cannot open bag"),
        (["--bag", str(unknown)], "cannot open bag"),
        (["--bag", str(empty)], "holds no message (empty bag)"),
        (["--bag", str(bare)], "topics: none"),
        (["--bag", str(strings)], "no image topic"),
        (["--bag", str(two)], "several image topics"),
        (["--bag", str(good), "--image-topic", "/nope"], "is not in"),
        (["--bag", str(strings), "--image-topic", "/chatter"], "not sensor_msgs/Image"),
        (["--bag", str(good), "--out", str(busy)], "already holds results"),
        (["--bag", str(good), "--gt", str(tmp_path / "nogt")], "ground-truth folder not found"),
        (["--bag", str(good), "--realtime", "0"], "must be > 0"),
        (["--bag", str(good), "--presence-threshold", "0.3"], "presence_threshold must be in [0.5, 1)"),
    ]
    for args, expected in cases:
        if "--out" not in args:
            args = args + ["--out", str(tmp_path / "o")]
        p = cli(*args, "--text", "the red circle", "--config", "cpu_small", "--quiet")
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in p.stderr and expected in lines[0], (args, p.stderr)


def test_live_against_the_real_node(tmp_path, video, gt_dir):
    """--live --start-node: the node as its own process over DDS; every frame comes back with
    its stamp, the scores equal the in-process replay (the bundled model, the same policy, no
    drops at 5 Hz)."""
    pytest.importorskip("rclpy")
    frames, _ = video
    bag = write_image_bag(tmp_path / "in", frames, storage="mcap", rate_hz=5.0)
    env = dict(os.environ, ROS_DOMAIN_ID=str(60 + os.getpid() % 40), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               OMP_NUM_THREADS="1")
    cmd = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "mpg_sam2_ros.cli"]
    # ground truth by stamp: the bag at 5 Hz has other stamps than gt_dir; re-key it
    gt = tmp_path / "gt"
    from mpg_sam2_ros.core.io import write_mask

    for i, lab in enumerate(video[1]):
        ns = 1_700_000_000 * 10**9 + i * 200_000_000
        for k in range(2):
            write_mask(gt / f"object_{k}" / f"{stamp_name((ns // 10**9, ns % 10**9))}.png", lab == k + 1)
    p = subprocess.run(cmd + ["bag-replay", "--bag", str(bag), "--text", TEXTS[0], "--text", TEXTS[1], "--out",
                              str(tmp_path / "live"), "--gt", str(gt), "--live", "--start-node",
                              "--node-timeout", "120", "--presence-threshold", "0.6", "--reanchor-every", "4",
                              "--reanchor-after-absent", "3", "--quiet"],
                       capture_output=True, text=True, timeout=280, env=env)
    assert p.returncode == 0, p.stderr[-3000:] + (tmp_path / "live" / "node.log").read_text()[-3000:]
    s = json.loads(p.stdout)
    assert s["mode"] == "live" and s["node"]["started_here"] and s["node"]["exit_code"] == 0
    assert s["model"]["config"] == "cpu_small"
    # the policy went to the node as parameters, and is the one its diagnostics report
    assert s["policy"] == {"reanchor_after_absent": 3, "reanchor_every": 4, "presence_threshold": 0.6}
    assert s["frames"]["read"] == T and s["frames"]["outputs"] == T and s["frames"]["dropped"] == 0
    assert s["transport_latency_ms"]["p50"] is not None and s["latency_ms"]["p50"] >= s["node_latency_ms"]["p50"] * 0.5
    segs = read_topic(tmp_path / "live" / "result_bag", "/segmentation")
    assert len(segs) == T and [seg.objects[0].text for _, seg in segs] == [TEXTS[0]] * T
    # the bundled model (random weights would leave every mask empty, and the comparison idle)
    assert sum(o.area for _, seg in segs for o in seg.objects) > 0
    offline = replay(bag, tmp_path / "offline", config=None, gt=str(gt), presence_threshold=0.6, reanchor_every=4,
                     reanchor_after_absent=3)
    assert s["J&F"] == pytest.approx(offline["J&F"], abs=1e-3)
    # mask by mask: the node ran the same policy (threshold and re-anchoring change these areas)
    areas = [[o.area for o in seg.objects] for _, seg in segs]
    assert areas == [[o.area for o in seg.objects] for _, seg in read_topic(tmp_path / "offline" / "result_bag", "/segmentation")]
    report = evaluate_folders(tmp_path / "live" / "masks", tmp_path / "live" / "gt").as_dict()
    assert report["J&F"] == pytest.approx(s["J&F"], abs=1e-3)


def test_live_policy_is_what_the_diagnostics_say():
    """A node's policy comes from its /diagnostics values; what they lack is unknown (None), not 0."""
    from mpg_sam2_ros.replay.live import diagnosed_policy

    assert diagnosed_policy({"presence_threshold": "0.85", "reanchor_after_absent": "3", "reanchor_every": "0"}) == {
        "reanchor_after_absent": 3, "reanchor_every": 0, "presence_threshold": 0.85}
    assert diagnosed_policy({}) == {"reanchor_after_absent": None, "reanchor_every": None, "presence_threshold": None}
    # an unconfigured node reports an empty threshold
    assert diagnosed_policy({"presence_threshold": "", "reanchor_every": "x"})["presence_threshold"] is None
