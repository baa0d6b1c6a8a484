"""Image message <-> numpy conversion (no DDS): every encoding, padded rows, big-endian data,
compressed JPEG/PNG, and every malformed input raising its own error class."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg")
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from mpg_sam2_ros.ros import conversions as cv  # noqa: E402
from mpg_sam2_ros.ros.conversions import (  # noqa: E402
    BoundingBox,
    CompressedImageError,
    ImageConversionError,
    ImageDataError,
    ImageSizeError,
    ImageStepError,
    UnsupportedEncodingError,
)

H, W = 5, 7
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
GREY = RNG.integers(0, 256, (H, W), dtype=np.uint8)
G16 = RNG.integers(0, 65536, (H, W), dtype=np.uint16)


def _native(encoding):
    """(pixels in ``encoding``, expected RGB)."""
    alpha = np.full((H, W, 1), 9, np.uint8)
    if encoding == "rgb8":
        return RGB, RGB
    if encoding == "bgr8":
        return RGB[:, :, ::-1].copy(), RGB
    if encoding == "rgba8":
        return np.concatenate([RGB, alpha], 2), RGB
    if encoding == "bgra8":
        return np.concatenate([RGB[:, :, ::-1], alpha], 2), RGB
    if encoding in ("mono8", "8UC1"):
        return GREY, np.repeat(GREY[:, :, None], 3, 2)
    if encoding == "mono16":
        return G16, np.repeat((G16 >> 8).astype(np.uint8)[:, :, None], 3, 2)
    raise AssertionError(encoding)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "mono16"])
@pytest.mark.parametrize("padding", [0, 3])
def test_every_encoding_roundtrips(encoding, padding):
    pixels, rgb = _native(encoding)
    header = Header(frame_id="cam")
    msg = cv.array_to_image(pixels, encoding, header=header, row_padding=padding)
    assert msg.step == W * pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1) + padding
    assert len(msg.data) == msg.step * H and msg.header.frame_id == "cam"
    np.testing.assert_array_equal(cv.image_to_array(msg), pixels)
    out = cv.image_to_rgb(msg)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
def test_big_endian_16_bit(encoding):
    little = cv.array_to_image(G16, encoding)
    big = cv.array_to_image(G16, encoding, bigendian=True, row_padding=2)
    assert big.is_bigendian == 1 and bytes(big.data) != bytes(little.data)
    np.testing.assert_array_equal(cv.image_to_array(big), G16)
    np.testing.assert_array_equal(cv.image_to_rgb(big), cv.image_to_rgb(little))


def test_16uc1_depth_scaled_min_max_zero_stays_zero():
    depth = np.array([[0, 500, 1000], [750, 0, 1000]], np.uint16)
    out = cv.image_to_rgb(cv.array_to_image(depth, "16UC1"))[:, :, 0]
    np.testing.assert_array_equal(out, [[0, 1, 255], [128, 0, 255]])
    const = cv.image_to_rgb(cv.array_to_image(np.full((2, 2), 7, np.uint16), "16UC1"))
    assert (const == 255).all()
    assert (cv.image_to_rgb(cv.array_to_image(np.zeros((2, 2), np.uint16), "16UC1")) == 0).all()


def _raw(encoding="rgb8", h=H, w=W, step=None, data=None):
    m = Image()
    m.height, m.width, m.encoding = h, w, encoding
    m.step = w * 3 if step is None else step
    m.data = bytes(m.step * h) if data is None else data
    return m


@pytest.mark.parametrize(
    "msg, error, words",
    [
        (_raw("yuv422"), UnsupportedEncodingError, "unsupported image encoding 'yuv422'"),
        (_raw("32FC1", step=W * 4), UnsupportedEncodingError, "32FC1"),
        (_raw(""), UnsupportedEncodingError, "unsupported"),
        (_raw(data=bytes(W * 3 * H - 1)), ImageDataError, "truncated"),
        (_raw(data=bytes(W * 3 * H + 5)), ImageDataError, "too long"),
        (_raw(data=b""), ImageDataError, "truncated"),
        (_raw(step=W * 3 - 1), ImageStepError, "smaller than one row"),
        (_raw("mono16", step=W), ImageStepError, "smaller than one row"),
        (_raw(step=0, data=b""), ImageStepError, "step 0"),
        (_raw(h=0, data=b""), ImageSizeError, "empty"),
        (_raw(w=0, step=0, data=b""), ImageSizeError, "empty"),
        (_raw(h=20000, w=1, step=3, data=bytes(60000)), ImageSizeError, "larger than"),
    ],
    ids=["yuv", "float", "no-encoding", "truncated", "too-long", "no-data", "short-step", "short-step-16",
         "zero-step", "zero-height", "zero-width", "oversize"],
)
def test_bad_images_raise_their_error_class(msg, error, words):
    with pytest.raises(error, match=words) as info:
        cv.image_to_rgb(msg)
    assert isinstance(info.value, ImageConversionError) and isinstance(info.value, ValueError)
    assert info.value.reason == error.reason


def test_reasons_are_distinct_and_max_side_is_a_parameter():
    classes = [UnsupportedEncodingError, ImageStepError, ImageDataError, ImageSizeError, CompressedImageError]
    assert len({c.reason for c in classes}) == len(classes)
    with pytest.raises(ImageSizeError):
        cv.image_to_rgb(cv.array_to_image(RGB, "rgb8"), max_side=6)
    assert cv.image_to_rgb(cv.array_to_image(RGB, "rgb8"), max_side=7).shape == (H, W, 3)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_decodes(fmt):
    smooth = np.zeros((32, 48, 3), np.uint8)
    smooth[:, :24] = (200, 30, 60)
    smooth[:, 24:] = (10, 220, 90)
    msg = cv.rgb_to_compressed(smooth, fmt, header=Header(frame_id="c"))
    assert msg.format == fmt
    out = cv.compressed_to_rgb(msg)
    assert out.shape == smooth.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - smooth)
    if fmt == "png":
        assert diff.max() == 0
    else:  # lossy: compare away from the colour edge (chroma subsampling blurs it)
        assert max(diff[:, :16].max(), diff[:, 32:].max()) <= 12


def test_compressed_png_grey_and_16_bit():
    import cv2

    ok, buf = cv2.imencode(".png", G16)
    out = cv.compressed_to_rgb(CompressedImage(format="png", data=buf.tobytes()))
    np.testing.assert_array_equal(out[:, :, 1], (G16 >> 8).astype(np.uint8))
    ok, buf = cv2.imencode(".png", GREY)
    np.testing.assert_array_equal(cv.compressed_to_rgb(CompressedImage(format="png", data=buf.tobytes()))[:, :, 2], GREY)


def _jpeg():
    return bytes(cv.rgb_to_compressed(RGB, "jpeg").data)


def _png():
    return bytes(cv.rgb_to_compressed(RGB, "png").data)


@pytest.mark.parametrize(
    "fmt, data, error",
    [
        ("jpeg", b"", CompressedImageError),
        ("jpeg", b"hello world, not an image", CompressedImageError),
        ("jpeg", _jpeg()[: len(_jpeg()) // 2], CompressedImageError),
        ("jpeg", _jpeg()[:4] + bytes(200) + b"\xff\xd9", CompressedImageError),
        ("png", _png()[:-20], CompressedImageError),
        ("png", _png()[:30] + bytes(len(_png()) - 30), CompressedImageError),
        ("16UC1; compressedDepth png", _png(), UnsupportedEncodingError),
    ],
    ids=["empty", "garbage", "truncated-jpeg", "corrupt-jpeg", "truncated-png", "corrupt-png", "compressed-depth"],
)
def test_bad_compressed_raise(fmt, data, error):
    with pytest.raises(error) as info:
        cv.compressed_to_rgb(CompressedImage(format=fmt, data=data))
    assert isinstance(info.value, ImageConversionError)


def test_png_oversize_rejected_before_decoding():
    data = bytearray(_png())
    data[16:20] = (70000).to_bytes(4, "big")
    with pytest.raises(ImageSizeError):
        cv.compressed_to_rgb(CompressedImage(format="png", data=bytes(data)))


def test_mask_to_image_bbox_area():
    mask = np.zeros((6, 8), bool)
    mask[1:3, 2:5] = True
    img = cv.mask_to_image(mask, header=Header(frame_id="m"))
    assert (img.encoding, img.height, img.width, img.step, img.header.frame_id) == ("mono8", 6, 8, 8, "m")
    data = np.frombuffer(bytes(img.data), np.uint8)
    assert set(np.unique(data)) == {0, 255} and (data == 255).sum() == 6
    assert cv.mask_bbox(mask) == BoundingBox(2, 1, 3, 2)
    roi = cv.mask_bbox(mask).to_roi()
    assert (roi.x_offset, roi.y_offset, roi.width, roi.height) == (2, 1, 3, 2)
    assert cv.mask_area(mask) == 6
    assert cv.mask_bbox(np.zeros((3, 3))) == BoundingBox(0, 0, 0, 0) and cv.mask_area(np.zeros((3, 3))) == 0
    with pytest.raises(ValueError):
        cv.mask_to_image(np.zeros((2, 2, 1)))


def test_rgb_to_image_bgr8_and_wrong_arrays():
    img = cv.rgb_to_image(RGB, "bgr8")
    assert img.encoding == "bgr8"
    np.testing.assert_array_equal(cv.image_to_rgb(img), RGB)
    with pytest.raises(ValueError):
        cv.array_to_image(RGB.astype(np.uint16), "rgb8")
    with pytest.raises(UnsupportedEncodingError):
        cv.array_to_image(RGB, "yuv422")


def test_cv_bridge_not_importable_here_uses_our_code():
    """Documented fact of the pip install path: no ROS 2 cv_bridge, so our unpacking runs."""
    try:
        import cv_bridge  # noqa: F401
    except Exception:  # noqa: BLE001
        assert not cv.cv_bridge_available()


# ----- serialised images (the node's raw subscription) -------------------------------------
def _be_cdr(frame_id: str, h: int, w: int, encoding: str, step: int, data: bytes) -> bytes:
    """A big-endian CDR ``sensor_msgs/Image``, written field by field (what a big-endian
    host's DDS would send): alignment counts from after the 4-byte encapsulation header."""
    import struct

    out = bytearray(b"\x00\x00\x00\x00")

    def pad(n):
        out.extend(b"\x00" * ((-(len(out) - 4)) % n))

    def u32(v, fmt=">I"):
        pad(4)
        out.extend(struct.pack(fmt, v))

    def string(t):
        u32(len(t) + 1)
        out.extend(t.encode() + b"\x00")

    u32(-3, ">i"), u32(7), string(frame_id), u32(h), u32(w), string(encoding)
    out.append(1)
    u32(step), u32(len(data))
    out.extend(data)
    return bytes(out)


def test_serialised_images_are_read_in_place_like_messages():
    """``cdr.parse_image`` on what rclpy serialises gives the message's fields, with ``data`` a
    view into the bytes; the image readers treat it like the message, errors included; bytes
    that are not an Image raise CdrError (the node then falls back to rclpy)."""
    from rclpy.serialization import serialize_message

    from mpg_sam2_ros.ros.cdr import CdrError, RawImage, parse_image

    cases = []
    for enc in ("rgb8", "bgra8", "mono8", "mono16", "16UC1"):  # every element size
        pixels, _ = _native(enc) if enc not in ("mono16", "16UC1") else (G16, None)
        for frame_id, padding in (("", 0), ("c", 3), ("cam", 1), ("camera_frame_é", 0)):  # every alignment of what follows
            cases.append(cv.array_to_image(pixels, enc, header=Header(frame_id=frame_id), row_padding=padding))
    big = cv.array_to_image(G16, "mono16")
    big.is_bigendian = 1
    big.data = G16.astype(">u2").tobytes()
    cases.append(big)
    for msg in cases:
        msg.header.stamp.sec, msg.header.stamp.nanosec = -5, 999_999_999
        raw = serialize_message(msg)
        r = parse_image(raw)
        assert isinstance(r.data, memoryview) and r.data.obj is not None
        assert (r.sec, r.nanosec, r.frame_id, r.height, r.width, r.encoding, r.is_bigendian, r.step) == (
            -5, 999_999_999, msg.header.frame_id, msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step)
        assert bytes(r.data) == bytes(msg.data)
        np.testing.assert_array_equal(cv.image_to_rgb(r), cv.image_to_rgb(msg))
    # the same checks on a bad image: a truncated data field is a bad_data_length skip, as for the message
    short = cv.array_to_image(RGB, "rgb8")
    short.data = bytes(short.data)[:-3]
    with pytest.raises(ImageDataError):
        cv.image_to_rgb(parse_image(serialize_message(short)))
    # big-endian CDR
    data = RGB.tobytes()
    r = parse_image(_be_cdr("cam0", H, W, "rgb8", 3 * W, data))
    assert (r.sec, r.nanosec, r.frame_id, r.encoding, r.is_bigendian) == (-3, 7, "cam0", "rgb8", 1)
    np.testing.assert_array_equal(cv.image_to_rgb(r), RGB)
    # not an Image: every cut of a real one, a bad encapsulation, a string without its NUL
    raw = serialize_message(cv.array_to_image(RGB, "rgb8", header=Header(frame_id="cam")))
    for cut in (0, 3, 4, 10, 20, 40, len(raw) - 1):
        with pytest.raises(CdrError):
            parse_image(raw[:cut])
    with pytest.raises(CdrError):
        parse_image(b"\x00\x02" + raw[2:])  # XCDR2 / PL_CDR: not read here
    broken = bytearray(raw)
    broken[4 + 8 + 4 + 3] = ord("x")  # frame_id "cam" + NUL -> "camx"
    with pytest.raises(CdrError):
        parse_image(bytes(broken))
    assert isinstance(parse_image(raw), RawImage)


def test_serialized_image_to_rgb_reads_in_place_and_falls_back_to_rclpy(monkeypatch):
    """The node's reader: the same pixels and header as the message path, an owned writable
    array, rclpy's deserialisation for bytes the CDR reader gives up on, and one
    ImageConversionError (reason bad_image) for bytes nobody can read."""
    from rclpy.serialization import serialize_message

    from mpg_sam2_ros.ros import cdr

    msg = cv.array_to_image(RGB, "rgb8", header=Header(frame_id="cam"))
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 34
    raw = serialize_message(msg)
    for reader_works in (True, False):
        if not reader_works:
            def refuse(_raw):
                raise cdr.CdrError("refused for the test")
            monkeypatch.setattr(cv, "parse_image", refuse)
        rgb, header = cv.serialized_image_to_rgb(raw)
        np.testing.assert_array_equal(rgb, RGB)
        assert rgb.flags.writeable
        assert (header.frame_id, header.stamp.sec, header.stamp.nanosec) == ("cam", 12, 34)
        assert isinstance(header, Header)
    with pytest.raises(ImageConversionError) as err:
        cv.serialized_image_to_rgb(b"\x00\x01\x00\x00\x05")
    assert err.value.reason == "bad_image"
    bad = cv.array_to_image(RGB, "rgb8")
    bad.step = 2  # smaller than a row: the usual check, through the fast reader
    monkeypatch.undo()
    with pytest.raises(ImageStepError):
        cv.serialized_image_to_rgb(serialize_message(bad))
