"""Reading TensorBoard event files back, with every checksum checked."""

import struct

from tensorboardX.proto.event_pb2 import Event
from tensorboardX.record_writer import masked_crc32c


def read_events(path) -> list:
    """The Event protos of a TFRecord event file (u64 length, masked CRC-32C of it, payload, masked CRC-32C of
    that), every checksum checked: what TensorBoard's loader requires of the file."""
    with open(path, "rb") as f:
        data = f.read()
    events, pos = [], 0
    while pos < len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        payload = data[pos + 12 : pos + 12 + length]
        assert struct.unpack("<I", data[pos + 8 : pos + 12])[0] == masked_crc32c(header), f"record at {pos}"
        assert struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])[0] == masked_crc32c(payload), pos
        events.append(Event.FromString(payload))
        pos += 16 + length
    return events
