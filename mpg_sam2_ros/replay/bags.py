"""ROS 2 bags through ``rosbags`` (no ROS install needed): open and check an input bag, find its
image topics, decode image messages, and write a result bag in the input's storage format.

Reads sqlite3 and mcap storage, rosbag2 metadata versions 1..9 (what ``ros2 bag record`` has
written from Foxy to today), split bags (one folder, several storage files) and single
``.db3`` / ``.mcap`` files. Our ``msg/`` types are registered in the type store from the
``.msg`` files themselves, so the result bag carries their real definitions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

PACKAGE = "mpg_sam2_ros"
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
SEGMENTATION_TYPE = f"{PACKAGE}/msg/Segmentation"


class BagError(ValueError):
    """A bag that cannot be used (missing, not a bag, unknown storage, no such topic, ...)."""


def msg_dir() -> Path:
    """``msg/`` of the checkout or of the installed package's share folder."""
    from ..core.config import data_dirs

    for d in data_dirs():
        if (d / "msg" / "Segmentation.msg").is_file():
            return d / "msg"
    raise BagError("cannot find the package's msg/ folder (Segmentation.msg)")


_TYPESTORE = None


def typestore():
    """ROS 2 Jazzy's standard types plus ``mpg_sam2_ros/msg/*`` parsed from our ``.msg`` files."""
    global _TYPESTORE
    if _TYPESTORE is None:
        from rosbags.typesys import Stores, get_types_from_msg, get_typestore

        store = get_typestore(Stores.ROS2_JAZZY)
        types: dict = {}
        for path in sorted(msg_dir().glob("*.msg")):
            types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
        store.register(types)
        _TYPESTORE = store
    return _TYPESTORE


@dataclass
class BagMessage:
    """One stored message: its index in the selected topic, receive time (ns), raw CDR bytes."""

    index: int
    recv_ns: int
    raw: bytes


class InputBag:
    """An opened input bag. ``storage`` is ``sqlite3`` or ``mcap``; ``topics`` maps each topic
    to its message type and count."""

    def __init__(self, path: str | Path) -> None:
        from rosbags.rosbag2 import Reader
        from rosbags.rosbag2.errors import ReaderError

        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag not found: {self.path}")
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            raise BagError(f"not a ROS 2 bag: {self.path} has no metadata.yaml")
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except (ReaderError, KeyError, ValueError, OSError) as exc:
            raise BagError(f"cannot open bag {self.path}: {_one_line(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - rosbags raises assorted errors on junk files
            raise BagError(f"cannot open bag {self.path}: {type(exc).__name__}: {_one_line(exc)}") from None
        self.storage = self._storage_id()
        self.topics = {t: (info.msgtype or "?", info.msgcount) for t, info in self._reader.topics.items()}

    def _storage_id(self) -> str:
        if self.path.is_dir():
            meta = getattr(self._reader.storage, "metadata", None)
            ident = meta.get("storage_identifier") if isinstance(meta, dict) else None
            if ident is None:
                text = (self.path / "metadata.yaml").read_text(errors="replace")
                m = re.search(r"storage_identifier:\s*(\S+)", text)
                ident = m.group(1) if m else "sqlite3"
            return str(ident)
        return {".db3": "sqlite3", ".mcap": "mcap"}[self.path.suffix]

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> "InputBag":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def duration_s(self) -> float:
        """Seconds between the first and the last message."""
        return self._reader.duration / 1e9

    def image_topics(self) -> list[str]:
        return sorted(t for t, (typ, _) in self.topics.items() if typ in IMAGE_TYPES)

    def select_image_topic(self, topic: str | None) -> str:
        """The requested topic (checked), or the only image topic."""
        found = self.image_topics()
        if topic is None:
            if len(found) == 1:
                return found[0]
            if not found:
                listing = ", ".join(f"{t} ({typ})" for t, (typ, _) in sorted(self.topics.items())) or "none"
                raise BagError(f"no image topic (sensor_msgs/Image or CompressedImage) in {self.path}; topics: {listing}")
            raise BagError(f"several image topics in {self.path}: {', '.join(found)}; choose one with --image-topic")
        if topic not in self.topics:
            raise BagError(f"topic {topic} is not in {self.path} (image topics: {', '.join(found) or 'none'})")
        typ = self.topics[topic][0]
        if typ not in IMAGE_TYPES:
            raise BagError(f"topic {topic} carries {typ}, not sensor_msgs/Image or CompressedImage")
        return topic

    def msgtype(self, topic: str) -> str:
        return self.topics[topic][0]

    def count(self, topic: str) -> int:
        return int(self.topics[topic][1])

    def connections(self, topic: str) -> list:
        return [c for c in self._reader.connections if c.topic == topic]

    def messages(self, topic: str) -> Iterator[BagMessage]:
        """The topic's messages in bag (receive-time) order."""
        for index, (_, recv_ns, raw) in enumerate(self._reader.messages(self.connections(topic))):
            yield BagMessage(index, int(recv_ns), bytes(raw))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ----- decoding ---------------------------------------------------------------------------

class DecodeError(ValueError):
    """One message that cannot be used; ``reason`` is the counted skip key."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def deserialize(raw: bytes, msgtype: str) -> Any:
    try:
        return typestore().deserialize_cdr(raw, msgtype)
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt CDR raises assorted errors
        raise DecodeError(f"cannot deserialize {msgtype}: {_one_line(exc)}", "corrupt_message") from None


def decode_image(msg: Any, msgtype: str, *, max_side: int | None = None) -> np.ndarray:
    """A deserialised Image / CompressedImage -> RGB uint8 [H, W, 3]; ``DecodeError`` if bad."""
    from ..ros.conversions import MAX_SIDE, ImageConversionError, compressed_to_rgb, image_to_rgb

    side = max_side or MAX_SIDE
    try:
        rgb = compressed_to_rgb(msg, max_side=side) if msgtype.endswith("CompressedImage") else image_to_rgb(msg, max_side=side)
    except ImageConversionError as exc:
        raise DecodeError(str(exc), f"bad_image.{exc.reason}") from None
    return rgb if rgb.flags.writeable else rgb.copy()  # a view of the message buffer: own it


def decode_mask(msg: Any, msgtype: str) -> np.ndarray:
    """A ground-truth image message -> uint8 [H, W] label image (grey value, or any channel)."""
    from ..ros.conversions import ImageConversionError, image_to_array

    if msgtype.endswith("CompressedImage"):
        import cv2

        arr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise DecodeError("cannot decode a compressed ground-truth mask", "corrupt_gt")
    else:
        try:
            arr = image_to_array(msg)
        except ImageConversionError as exc:
            raise DecodeError(f"ground-truth mask: {exc}", "corrupt_gt") from None
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    return np.asarray(arr)


def stamp_of(msg: Any) -> tuple[int, int]:
    return int(msg.header.stamp.sec), int(msg.header.stamp.nanosec)


def stamp_name(stamp: tuple[int, int]) -> str:
    """The file stem of a frame named by its header stamp: ``<sec>_<nanosec, 9 digits>``."""
    return f"{stamp[0]}_{stamp[1]:09d}"


# ----- writing ----------------------------------------------------------------------------

def header(stamp: tuple[int, int], frame_id: str) -> Any:
    t = typestore().types
    return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=stamp[0], nanosec=stamp[1]),
                                    frame_id=frame_id)


def mono8_message(mask: np.ndarray, hdr: Any) -> Any:
    """bool [H, W] -> a rosbags ``sensor_msgs/msg/Image`` mono8 (0/255)."""
    h, w = mask.shape
    data = np.where(mask, 255, 0).astype(np.uint8).reshape(-1)
    return typestore().types["sensor_msgs/msg/Image"](header=hdr, height=h, width=w, encoding="mono8",
                                                       is_bigendian=0, step=w, data=data)


def segmentation_message(hdr: Any, frame_index: int, stream_reset: bool, latency_ms: float,
                         objects: list[dict]) -> Any:
    """A rosbags ``mpg_sam2_ros/msg/Segmentation``. objects: dicts with object_id, text,
    mask (bool [H, W]), score, present; box and area are computed here as the node does."""
    from ..ros.conversions import mask_area, mask_bbox

    t = typestore().types
    items = []
    for o in objects:
        box = mask_bbox(o["mask"])
        roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=box.x, y_offset=box.y, height=box.height,
                                                     width=box.width, do_rectify=False)
        items.append(t[f"{PACKAGE}/msg/ObjectSegmentation"](
            object_id=int(o["object_id"]), text=str(o["text"]), mask=mono8_message(o["mask"], hdr),
            score=float(o["score"]), present=bool(o["present"]), bbox=roi, area=mask_area(o["mask"])))
    return t[SEGMENTATION_TYPE](header=hdr, frame_index=int(frame_index), stream_reset=bool(stream_reset),
                                latency_ms=float(latency_ms), objects=items)


class ResultBag:
    """The output bag: the input image topic (raw bytes copied), ``/mask`` and ``/segmentation``.
    Messages are logged at their input frame's receive time, so they line up with it."""

    def __init__(self, path: Path, storage: str, image_topic: str, image_type: str) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}.get(storage)
        if plugin is None:
            raise BagError(f"cannot write storage {storage!r} (sqlite3 or mcap)")
        self.path = path
        self._writer = Writer(path, version=9, storage_plugin=plugin)
        self._writer.open()
        store = typestore()
        self._image = self._writer.add_connection(image_topic, image_type, typestore=store)
        self._mask = self._writer.add_connection("/mask", "sensor_msgs/msg/Image", typestore=store)
        self._seg = self._writer.add_connection("/segmentation", SEGMENTATION_TYPE, typestore=store)
        self.counts = {"image": 0, "mask": 0, "segmentation": 0}
        self._open = True

    def write_image(self, recv_ns: int, raw: bytes) -> None:
        self._writer.write(self._image, recv_ns, raw)
        self.counts["image"] += 1

    def write_result(self, recv_ns: int, mask_msg: Any, seg_msg: Any) -> None:
        """rosbags messages, or CDR bytes already serialised (e.g. by rclpy)."""
        store = typestore()
        mask_raw = mask_msg if isinstance(mask_msg, (bytes, bytearray)) else store.serialize_cdr(mask_msg, "sensor_msgs/msg/Image")
        seg_raw = seg_msg if isinstance(seg_msg, (bytes, bytearray)) else store.serialize_cdr(seg_msg, SEGMENTATION_TYPE)
        self._writer.write(self._mask, recv_ns, bytes(mask_raw))
        self._writer.write(self._seg, recv_ns, bytes(seg_raw))
        self.counts["mask"] += 1
        self.counts["segmentation"] += 1

    def close(self) -> None:
        if self._open:
            self._open = False
            self._writer.close()


def image_message(rgb: np.ndarray, hdr: Any, encoding: str = "rgb8") -> Any:
    """RGB uint8 [H, W, 3] -> a rosbags ``sensor_msgs/msg/Image`` in rgb8, bgr8 or mono8."""
    import cv2

    if encoding == "rgb8":
        arr = rgb
    elif encoding == "bgr8":
        arr = rgb[:, :, ::-1]
    elif encoding == "mono8":
        arr = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    else:
        raise ValueError(f"image_message writes rgb8, bgr8 or mono8, not {encoding!r}")
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    return typestore().types["sensor_msgs/msg/Image"](header=hdr, height=h, width=w, encoding=encoding, is_bigendian=0,
                                                       step=arr.strides[0], data=arr.reshape(-1).view(np.uint8))


def compressed_message(rgb: np.ndarray, hdr: Any, fmt: str = "jpeg", quality: int = 92) -> Any:
    """RGB uint8 [H, W, 3] -> a rosbags ``sensor_msgs/msg/CompressedImage`` (jpeg or png)."""
    import cv2

    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", np.ascontiguousarray(rgb[:, :, ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else [])
    if not ok:
        raise ValueError(f"cannot encode a frame as {fmt}")
    return typestore().types["sensor_msgs/msg/CompressedImage"](header=hdr, format=fmt, data=buf.reshape(-1))


def write_image_bag(path: str | Path, frames: list[np.ndarray], *, rate_hz: float = 10.0, storage: str = "sqlite3",
                    topic: str = "/camera/image_raw", encoding: str = "rgb8", compressed: str | None = None,
                    stamps: list[tuple[int, int]] | None = None, start_ns: int = 1_700_000_000 * 10**9,
                    frame_id: str = "camera", gt_topic: str | None = None, gt_labels: list[np.ndarray] | None = None,
                    extra: dict[int, bytes] | None = None) -> Path:
    """Write frames (RGB uint8) as a ROS 2 bag, as ``ros2 bag record`` would store them.

    ``compressed``: ``jpeg``/``png`` for a CompressedImage topic (else Image in ``encoding``);
    ``stamps``: header stamps (default: receive times); receive times are ``start_ns`` + i / rate;
    ``gt_topic``/``gt_labels``: a mono8 label topic stamped like the frames; ``extra``: raw bytes
    that replace message i (e.g. a corrupt message)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = typestore()
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    path = Path(path)
    msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    writer = Writer(path, version=9, storage_plugin=plugin)
    writer.open()
    try:
        conn = writer.add_connection(topic, msgtype, typestore=store)
        gconn = writer.add_connection(gt_topic, "sensor_msgs/msg/Image", typestore=store) if gt_topic else None
        for i, rgb in enumerate(frames):
            recv = start_ns + int(round(i * 1e9 / rate_hz))
            stamp = stamps[i] if stamps is not None else (recv // 10**9, recv % 10**9)
            hdr = header(stamp, frame_id)
            msg = compressed_message(rgb, hdr, compressed) if compressed else image_message(rgb, hdr, encoding)
            raw = (extra or {}).get(i)
            writer.write(conn, recv, raw if raw is not None else bytes(store.serialize_cdr(msg, msgtype)))
            if gconn is not None and gt_labels is not None:
                label = np.ascontiguousarray(gt_labels[i].astype(np.uint8))
                gmsg = store.types["sensor_msgs/msg/Image"](header=hdr, height=label.shape[0], width=label.shape[1],
                                                            encoding="mono8", is_bigendian=0, step=label.shape[1],
                                                            data=label.reshape(-1))
                writer.write(gconn, recv + 1000, bytes(store.serialize_cdr(gmsg, "sensor_msgs/msg/Image")))
    finally:
        writer.close()
    return path
