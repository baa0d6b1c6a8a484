"""``sensor_msgs`` images <-> numpy arrays, with strict checks.

Pure numpy (+ OpenCV for JPEG/PNG) on message objects; rclpy only in
``serialized_image_to_rgb``, for bytes our CDR reader cannot read. ``cv_bridge`` is used to
unpack raw ``Image`` buffers when it is importable and working (a full ROS 2 install);
otherwise (ROS 2 from PyPI wheels, where it does not exist) our own unpacking below is used.
Both paths go through the same validation first, so the errors are the same. The readers only
use the messages' fields, so they also take ``rosbags``' deserialised messages (bag replay).

Supported raw encodings (``Image.encoding``): rgb8, bgr8, rgba8, bgra8, mono8 (alias 8UC1),
mono16 and 16UC1. 16-bit images are scaled to 8 bit: ``mono16`` by its full range
(``value >> 8``), ``16UC1`` (usually depth in mm, 0 = invalid) per frame from its smallest to
its largest non-zero value to 1..255, zeros stay 0. Compressed images
(``CompressedImage``): JPEG and PNG (8 or 16 bit, grey, BGR or BGRA), recognised by their
magic bytes; ``compressedDepth`` is rejected.

Every rejected input raises a subclass of ``ImageConversionError`` whose ``reason`` is a short
key the node counts in its diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
try:  # reading works on any message-like object (e.g. rosbags' messages); building needs ROS 2
    from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
    from std_msgs.msg import Header
except ImportError:  # pragma: no cover - the ROS 2 wheels are in requirements.lock
    CompressedImage = Header = Image = RegionOfInterest = None

from ..core.preprocess import MAX_SIDE
from .cdr import CdrError, RawImage, parse_image


class ImageConversionError(ValueError):
    """An image message cannot be converted. ``reason``: counter key for diagnostics."""

    reason = "bad_image"


class UnsupportedEncodingError(ImageConversionError):
    reason = "unsupported_encoding"


class ImageStepError(ImageConversionError):
    """``step`` is smaller than one row of pixels (does not match width x pixel size)."""

    reason = "bad_step"


class ImageDataError(ImageConversionError):
    """``len(data) != step * height`` (truncated or trailing bytes)."""

    reason = "bad_data_length"


class ImageSizeError(ImageConversionError):
    """Zero-size image, or a side larger than ``max_side``."""

    reason = "bad_size"


class CompressedImageError(ImageConversionError):
    """Compressed data that is empty, neither JPEG nor PNG, truncated or corrupt."""

    reason = "corrupt_compressed"


@dataclass(frozen=True)
class PixelFormat:
    """channels per pixel and numpy dtype of one channel (uint8 or uint16)."""

    channels: int
    dtype: type


ENCODINGS: dict[str, PixelFormat] = {
    "rgb8": PixelFormat(3, np.uint8),
    "bgr8": PixelFormat(3, np.uint8),
    "rgba8": PixelFormat(4, np.uint8),
    "bgra8": PixelFormat(4, np.uint8),
    "mono8": PixelFormat(1, np.uint8),
    "8UC1": PixelFormat(1, np.uint8),
    "mono16": PixelFormat(1, np.uint16),
    "16UC1": PixelFormat(1, np.uint16),
}


def _load_cv_bridge() -> Any | None:
    """A working ``cv_bridge.CvBridge`` or None (not installed, or PyPI's ROS 1 package that
    fails with NumPy 2)."""
    try:
        from cv_bridge import CvBridge

        bridge = CvBridge()
        probe = Image(height=1, width=1, encoding="mono8", step=1, data=b"\x07")
        if int(np.asarray(bridge.imgmsg_to_cv2(probe, desired_encoding="passthrough")).ravel()[0]) != 7:
            return None
        return bridge
    except Exception:  # noqa: BLE001 - any failure means: use our own code
        return None


_CV_BRIDGE = _load_cv_bridge()


def cv_bridge_available() -> bool:
    return _CV_BRIDGE is not None


def _as_bytes_view(data: Any) -> np.ndarray:
    """``Image.data`` (array.array('B'), bytes, list) as a uint8 array without copying."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, np.uint8)
    try:
        return np.frombuffer(data, np.uint8)
    except (TypeError, ValueError):
        return np.asarray(data, dtype=np.uint8)


def check_image(msg: Image, *, max_side: int = MAX_SIDE) -> PixelFormat:
    """Validate an ``Image``'s encoding, size, ``step`` and data length; return its format."""
    fmt = ENCODINGS.get(msg.encoding)
    if fmt is None:
        raise UnsupportedEncodingError(
            f"unsupported image encoding {msg.encoding!r} (supported: {', '.join(ENCODINGS)})"
        )
    h, w = int(msg.height), int(msg.width)
    if h == 0 or w == 0:
        raise ImageSizeError(f"image is empty ({w}x{h})")
    if h > max_side or w > max_side:
        raise ImageSizeError(f"image {w}x{h} is larger than {max_side} pixels on a side")
    row = w * fmt.channels * np.dtype(fmt.dtype).itemsize
    step = int(msg.step)
    if step < row:
        raise ImageStepError(
            f"step {step} is smaller than one row ({w} px x {fmt.channels} ch x "
            f"{np.dtype(fmt.dtype).itemsize} B = {row} B) for {msg.encoding}"
        )
    n = len(msg.data)
    if n != step * h:
        kind = "truncated" if n < step * h else "too long"
        raise ImageDataError(f"image data {kind}: {n} bytes, expected step x height = {step} x {h} = {step * h}")
    return fmt


def image_to_array(msg: Image, *, max_side: int = MAX_SIDE) -> np.ndarray:
    """The image's pixels in their own encoding: ``[H, W]`` (mono) or ``[H, W, C]``, uint8 or
    uint16 in native byte order, row padding removed. Raises ``ImageConversionError``."""
    fmt = check_image(msg, max_side=max_side)
    h, w = int(msg.height), int(msg.width)
    if _CV_BRIDGE is not None and not isinstance(msg, RawImage):  # cv_bridge wants a real message
        arr = np.asarray(_CV_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="passthrough"))
        return np.ascontiguousarray(arr.reshape((h, w) if fmt.channels == 1 else (h, w, fmt.channels)))
    itemsize = np.dtype(fmt.dtype).itemsize
    rows = _as_bytes_view(msg.data).reshape(h, int(msg.step))[:, : w * fmt.channels * itemsize]
    if itemsize == 1:
        arr = rows
    else:
        order = ">" if msg.is_bigendian else "<"
        arr = np.ascontiguousarray(rows).view(np.dtype(fmt.dtype).newbyteorder(order)).astype(fmt.dtype)
    shape = (h, w) if fmt.channels == 1 else (h, w, fmt.channels)
    return np.ascontiguousarray(arr.reshape(shape))


def scale_16_to_8(arr: np.ndarray, encoding: str) -> np.ndarray:
    """uint16 ``[H, W]`` -> uint8: ``mono16`` by ``>> 8``; ``16UC1`` min-max over non-zero
    pixels to 1..255 (0 stays 0, a constant image maps to 255)."""
    if encoding != "16UC1":
        return (arr >> 8).astype(np.uint8)
    valid = arr > 0
    if not valid.any():
        return np.zeros(arr.shape, np.uint8)
    lo, hi = int(arr[valid].min()), int(arr[valid].max())
    out = np.zeros(arr.shape, np.uint8)
    if hi == lo:
        out[valid] = 255
    else:
        out[valid] = (1 + (arr[valid].astype(np.float32) - lo) * (254.0 / (hi - lo))).round().astype(np.uint8)
    return out


def array_to_rgb(arr: np.ndarray, encoding: str) -> np.ndarray:
    """Pixels in ``encoding`` (as ``image_to_array`` returns) -> RGB uint8 ``[H, W, 3]``."""
    if encoding in ("mono16", "16UC1"):
        arr = scale_16_to_8(arr, encoding)
        encoding = "mono8"
    if encoding in ("mono8", "8UC1"):
        return np.repeat(arr[:, :, None], 3, axis=2)
    if encoding == "rgb8":
        return arr
    if encoding == "rgba8":
        return np.ascontiguousarray(arr[:, :, :3])
    if encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(arr[:, :, 2::-1])
    raise UnsupportedEncodingError(f"unsupported image encoding {encoding!r}")


def image_to_rgb(msg: Image, *, max_side: int = MAX_SIDE) -> np.ndarray:
    """``sensor_msgs/Image`` -> RGB uint8 ``[H, W, 3]``. Raises ``ImageConversionError``."""
    return array_to_rgb(image_to_array(msg, max_side=max_side), msg.encoding)


def serialized_image_to_rgb(raw: bytes, *, max_side: int = MAX_SIDE) -> tuple[np.ndarray, Any]:
    """A serialised ``sensor_msgs/Image`` (what a raw subscription receives) -> (RGB uint8
    ``[H, W, 3]`` that owns its pixels, ``std_msgs/Header``). Read in place (``cdr``): rclpy's
    own path copies a frame twice more first. Bytes that reader does not understand go through
    rclpy's deserialisation, then the same checks. Raises ``ImageConversionError``."""
    try:
        msg = parse_image(raw)
        header = Header(frame_id=msg.frame_id)
        header.stamp.sec, header.stamp.nanosec = msg.sec, msg.nanosec
    except CdrError as exc:
        from rclpy.serialization import deserialize_message

        try:
            msg = deserialize_message(raw, Image)
        except Exception as err:  # noqa: BLE001 - rclpy raises several types for bad bytes
            raise ImageConversionError(f"not a readable sensor_msgs/Image ({exc}; rclpy: {type(err).__name__}: {err})") from err
        header = msg.header
    rgb = image_to_rgb(msg, max_side=max_side)
    if not rgb.flags.writeable:  # rgb8 is a view into the bytes: own it (0.03 ms for 640x480)
        rgb = rgb.copy()
    return rgb, header


_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def compressed_to_rgb(msg: CompressedImage, *, max_side: int = MAX_SIDE) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG or PNG) -> RGB uint8 ``[H, W, 3]``.
    Raises ``CompressedImageError`` (corrupt), ``UnsupportedEncodingError`` (other formats,
    ``compressedDepth``) or ``ImageSizeError``."""
    fmt = (msg.format or "").lower()
    if "compresseddepth" in fmt:
        raise UnsupportedEncodingError(f"compressedDepth images are not supported (format {msg.format!r})")
    data = bytes(msg.data)
    if not data:
        raise CompressedImageError("compressed image has no data")
    if data.startswith(_JPEG_MAGIC):
        # libjpeg decodes a truncated JPEG partially (with a warning): insist on its end marker
        if b"\xff\xd9" not in data[-64:]:
            raise CompressedImageError(f"JPEG data is truncated (no end-of-image marker, {len(data)} bytes)")
    elif data.startswith(_PNG_MAGIC):
        if len(data) >= 24:
            w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
            if w > max_side or h > max_side:
                raise ImageSizeError(f"PNG image {w}x{h} is larger than {max_side} pixels on a side")
    else:
        raise CompressedImageError(f"compressed data is neither JPEG nor PNG (format {msg.format!r}, {len(data)} bytes)")
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise CompressedImageError(f"cannot decode compressed image (format {msg.format!r}, {len(data)} bytes): corrupt data")
    h, w = decoded.shape[:2]
    if h > max_side or w > max_side:
        raise ImageSizeError(f"image {w}x{h} is larger than {max_side} pixels on a side")
    if decoded.dtype == np.uint16:
        decoded = (decoded >> 8).astype(np.uint8)
    elif decoded.dtype != np.uint8:
        raise UnsupportedEncodingError(f"compressed image has unsupported pixel type {decoded.dtype}")
    if decoded.ndim == 2:
        return array_to_rgb(decoded, "mono8")
    return array_to_rgb(decoded, {3: "bgr8", 4: "bgra8"}.get(decoded.shape[2], "?"))


# ----- numpy -> messages ------------------------------------------------------------------

def array_to_image(arr: np.ndarray, encoding: str, *, header: Any = None, row_padding: int = 0,
                   bigendian: bool = False) -> Image:
    """Pixels ``[H, W]`` or ``[H, W, C]`` already in ``encoding`` -> ``Image``; rows padded by
    ``row_padding`` zero bytes (``step`` = row bytes + padding)."""
    fmt = ENCODINGS.get(encoding)
    if fmt is None:
        raise UnsupportedEncodingError(f"unsupported image encoding {encoding!r}")
    arr = np.asarray(arr)
    expected = (fmt.channels,) if fmt.channels > 1 else ()
    if arr.ndim != 2 + len(expected) or arr.shape[2:] != expected or arr.dtype != fmt.dtype:
        raise ValueError(f"{encoding} needs a {np.dtype(fmt.dtype).name} array of shape [H, W{', ' + str(fmt.channels) if expected else ''}], "
                         f"got {arr.dtype} {arr.shape}")
    h, w = arr.shape[:2]
    if arr.dtype == np.uint16:
        arr = arr.astype(">u2" if bigendian else "<u2")
    rows = np.ascontiguousarray(arr).view(np.uint8).reshape(h, -1)
    if row_padding:
        rows = np.concatenate([rows, np.zeros((h, row_padding), np.uint8)], axis=1)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width, msg.encoding = h, w, encoding
    msg.is_bigendian = int(bool(bigendian) and arr.dtype.itemsize > 1)
    msg.step = rows.shape[1]
    msg.data = rows.tobytes()
    return msg


def rgb_to_image(rgb: np.ndarray, encoding: str = "rgb8", *, header: Any = None) -> Image:
    """RGB uint8 ``[H, W, 3]`` -> ``Image`` in ``rgb8`` or ``bgr8``."""
    if encoding == "bgr8":
        rgb = np.ascontiguousarray(rgb[:, :, ::-1])
    elif encoding != "rgb8":
        raise UnsupportedEncodingError(f"rgb_to_image writes rgb8 or bgr8, not {encoding!r}")
    return array_to_image(rgb, encoding, header=header)


def mask_to_image(mask: np.ndarray, *, header: Any = None) -> Image:
    """Boolean (or 0/non-zero) mask ``[H, W]`` -> mono8 ``Image`` with values 0/255."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {mask.shape}")
    return array_to_image(mask.astype(bool, copy=False).view(np.uint8) * np.uint8(255), "mono8", header=header)


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", *, header: Any = None, quality: int = 90) -> CompressedImage:
    """RGB uint8 ``[H, W, 3]`` -> ``CompressedImage`` (``jpeg`` or ``png``)."""
    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(fmt)
    if ext is None:
        raise UnsupportedEncodingError(f"compressed format must be jpeg or png, not {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]), params)
    if not ok:
        raise ValueError(f"cannot encode image as {fmt}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = "jpeg" if ext == ".jpg" else "png"
    msg.data = buf.tobytes()
    return msg


# ----- mask statistics --------------------------------------------------------------------

@dataclass(frozen=True)
class BoundingBox:
    """Tight box of a mask's foreground in pixels; all zeros for an empty mask."""

    x: int
    y: int
    width: int
    height: int

    def to_roi(self) -> RegionOfInterest:
        return RegionOfInterest(x_offset=self.x, y_offset=self.y, width=self.width, height=self.height)


def mask_bbox(mask: np.ndarray) -> BoundingBox:
    """Bounding box of the non-zero pixels of ``mask [H, W]``."""
    mask = np.asarray(mask).astype(bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return BoundingBox(0, 0, 0, 0)
    return BoundingBox(int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))


def mask_area(mask: np.ndarray) -> int:
    """Number of non-zero pixels of ``mask [H, W]``."""
    return int(np.count_nonzero(mask))
