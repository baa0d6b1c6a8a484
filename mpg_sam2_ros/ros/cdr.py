"""Read a serialised ``sensor_msgs/Image`` (CDR, as a raw subscription hands it over) without
building the Python message. ROS-free.

rclpy's normal path copies a 640x480 rgb8 frame three times before a callback sees it (DDS
buffer -> C message -> Python ``array.array``); a raw subscription gets the CDR bytes once and
``RawImage.data`` is a view into them, so the conversion to a numpy image starts from there.

The layout is plain CDR (XCDR1, what rmw_fastrtps and rmw_cyclonedds write for ROS 2
messages): a 4-byte encapsulation header (byte 1: 0 big-endian, 1 little-endian), then the
fields in order, each primitive aligned to its size counted from the end of that header;
strings are a uint32 length that includes the terminating NUL, then the bytes:

    header.stamp.sec int32, header.stamp.nanosec uint32, header.frame_id string,
    height uint32, width uint32, encoding string, is_bigendian uint8, step uint32,
    data uint8[] (uint32 count, then the bytes)

Anything that does not fit (short buffer, a length past the end, an unknown encapsulation)
raises ``CdrError``; the node then falls back to rclpy's own deserialisation, so a message
this reader cannot parse is still handled (or rejected) exactly as before.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


class CdrError(ValueError):
    """The bytes are not a CDR-serialised ``sensor_msgs/Image`` this reader understands."""


@dataclass(frozen=True)
class RawImage:
    """The fields of a ``sensor_msgs/Image`` read from CDR; ``data`` is a memoryview into the
    serialised bytes (no copy). The image readers in ``conversions`` take it like a message."""

    sec: int
    nanosec: int
    frame_id: str
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: memoryview


class _Reader:
    def __init__(self, raw: bytes | memoryview) -> None:
        self.buf = memoryview(raw).cast("B")
        if len(self.buf) < 4 or self.buf[0] != 0 or self.buf[1] not in (0, 1):
            raise CdrError("not a plain-CDR encapsulation header")
        self.endian = "<" if self.buf[1] == 1 else ">"
        self.pos = 4

    def _take(self, size: int, align: int) -> int:
        self.pos += (-(self.pos - 4)) % align
        start, self.pos = self.pos, self.pos + size
        if size < 0 or self.pos > len(self.buf):
            raise CdrError(f"truncated CDR: {size} bytes needed at offset {start}, {len(self.buf)} in all")
        return start

    def u32(self) -> int:
        return struct.unpack_from(self.endian + "I", self.buf, self._take(4, 4))[0]

    def i32(self) -> int:
        return struct.unpack_from(self.endian + "i", self.buf, self._take(4, 4))[0]

    def u8(self) -> int:
        return self.buf[self._take(1, 1)]

    def string(self) -> str:
        n = self.u32()
        start = self._take(n, 1)
        if n == 0:  # not what a ROS writer produces (it counts the NUL), but harmless
            return ""
        if self.buf[start + n - 1] != 0:
            raise CdrError("CDR string without its terminating NUL")
        try:
            return bytes(self.buf[start:start + n - 1]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CdrError(f"CDR string is not UTF-8: {exc}") from exc

    def octets(self) -> memoryview:
        n = self.u32()
        start = self._take(n, 1)
        return self.buf[start:start + n]


def parse_image(raw: bytes | memoryview) -> RawImage:
    """The fields of the serialised ``sensor_msgs/Image`` in ``raw`` (see the module docstring)."""
    r = _Reader(raw)
    sec, nanosec, frame_id = r.i32(), r.u32(), r.string()
    height, width, encoding = r.u32(), r.u32(), r.string()
    is_bigendian, step = r.u8(), r.u32()
    data = r.octets()
    return RawImage(sec, nanosec, frame_id, height, width, encoding, is_bigendian, step, data)
