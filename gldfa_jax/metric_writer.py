"""Scalar metrics to `metrics.jsonl` and to a TensorBoard event file, without TensorFlow (issue 3 item 9).

The event file is a TFRecord stream of `Event` protocol buffers holding `Summary.Value.simple_value` scalars;
the handful of protobuf fields involved are encoded by hand so neither TensorFlow nor tensorboardX is needed.
"""
import json
import os
import socket
import struct
import time

# CRC-32C (Castagnoli), reflected polynomial, as TFRecord framing requires.
_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:  # wire type 2: length-delimited
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int = 0, scalars: dict | None = None, file_version: str | None = None) -> bytes:
    """Event{wall_time=1 (double), step=2 (int64), file_version=3, summary=5{value=1{tag=1, simple_value=2}}}."""
    msg = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step)
    if file_version:
        msg += _field_bytes(3, file_version.encode())
    if scalars:
        values = b"".join(_field_bytes(1, _field_bytes(1, tag.encode()) + b"\x15" + struct.pack("<f", float(v)))
                          for tag, v in scalars.items())
        msg += _field_bytes(5, values)
    return msg


def tfrecord(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc(header)) + data + struct.pack("<I", masked_crc(data))


def _drop_partial_line(path: str) -> None:
    """A process killed mid-write leaves a line without its newline; a resumed run must not append to it."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


class MetricWriter:
    """Appends {"step", "split", **scalars} lines to DIR/metrics.jsonl and scalars to DIR/events.out.tfevents.*."""

    def __init__(self, workdir: str):
        path = os.path.join(workdir, "metrics.jsonl")
        _drop_partial_line(path)
        self.jsonl = open(path, "a")
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self.events = open(os.path.join(workdir, name), "ab")
        self.events.write(tfrecord(encode_event(time.time(), 0, file_version="brain.Event:2")))

    def write(self, step: int, split: str, scalars: dict) -> None:
        scalars = {k: float(v) for k, v in scalars.items()}
        self.jsonl.write(json.dumps({"step": int(step), "split": split, **scalars}) + "\n")
        self.events.write(tfrecord(encode_event(time.time(), int(step), {f"{split}/{k}": v for k, v in scalars.items()})))

    def flush(self) -> None:
        self.jsonl.flush()
        self.events.flush()

    def close(self) -> None:
        self.jsonl.close()
        self.events.close()
