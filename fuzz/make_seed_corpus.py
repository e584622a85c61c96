#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes the seed corpus for fuzz/idx_fuzzer.cpp into a directory (default fuzz/corpus/).

Small valid IDX files of every type (1 to 3 dimensions, plain and gzip) and the malformed
ones the reader must reject: wrong magic, unknown type, zero dimensions, a header or data cut
short, trailing data, dimensions whose product overflows or exceeds the data, and gzip
streams that are truncated, damaged or followed by garbage. Deterministic (gzip mtime 0).
"""
import gzip
import os
import struct
import sys

FORMATS = {0x08: ">B", 0x09: ">b", 0x0B: ">h", 0x0C: ">i", 0x0D: ">f", 0x0E: ">d"}


def idx(code, dims, values=None):
    n = 1
    for d in dims:
        n *= d
    if values is None:
        values = [(i * 7 - 3) if code not in (0x08,) else (i * 37) % 256 for i in range(n)]
        if code in (0x0D, 0x0E):
            values = [i * 0.25 - 1.5 for i in range(n)]
    out = bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    return out + b"".join(struct.pack(FORMATS[code], v) for v in values)


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    os.makedirs(out, exist_ok=True)
    files = {
        # valid, plain
        "u8_1d.idx": idx(0x08, [5]),
        "u8_3d.idx": idx(0x08, [2, 3, 2]),
        "i8_1d.idx": idx(0x09, [4]),
        "i16_2d.idx": idx(0x0B, [2, 2]),
        "i32_2d.idx": idx(0x0C, [2, 3]),
        "f32_1d.idx": idx(0x0D, [4]),
        "f32_special.idx": idx(0x0D, [4], [float("nan"), float("inf"), -0.0, 1e-45]),
        "f64_2d.idx": idx(0x0E, [2, 2]),
        "f64_3d.idx": idx(0x0E, [1, 2, 1]),
        "u8_empty.idx": idx(0x08, [0]),
        "i32_zero_dim.idx": idx(0x0C, [3, 0, 2]),
        # valid, gzip
        "u8_3d.idx.gz": gz(idx(0x08, [2, 3, 2])),
        "i32_2d.idx.gz": gz(idx(0x0C, [2, 3])),
        "f32_1d.idx.gz": gz(idx(0x0D, [4])),
        "f64_2d.idx.gz": gz(idx(0x0E, [2, 2])),
        "two_members.idx.gz": (lambda b: gz(b[:7]) + gz(b[7:]))(idx(0x08, [3, 2])),
        # malformed, plain
        "empty.idx": b"",
        "tiny.idx": b"\x00\x00",
        "wrong_magic.idx": b"\x12" + idx(0x08, [3])[1:],
        "unknown_type.idx": b"\x00\x00\x07\x01\x00\x00\x00\x01\x00",
        "zero_ndims.idx": b"\x00\x00\x08\x00",
        "header_cut.idx": idx(0x0C, [2, 3])[:9],
        "data_cut.idx": idx(0x0C, [2, 3])[:-3],
        "trailing.idx": idx(0x0E, [2]) + b"\x00",
        "huge_dims.idx": b"\x00\x00\x0E\x02" + b"\xff\xff\xff\xff" * 2 + b"\x00" * 8,
        "dims_exceed_data.idx": b"\x00\x00\x08\x02" + b"\x00\x01\x00\x00" * 2 + b"\x00" * 8,
        "overflow_dims.idx": b"\x00\x00\x08\x03" + b"\xff\xff\xff\xff" * 3,
        "overflow_then_zero.idx": b"\x00\x00\x08\x04" + b"\xff\xff\xff\xff" * 3 + b"\x00\x00\x00\x00",
        "zero_then_overflow.idx": b"\x00\x00\x08\x04" + b"\x00\x00\x00\x00" + b"\xff\xff\xff\xff" * 3,
        "gzip_magic_only.idx": b"\x1f\x8b",
        # malformed, gzip
        "gz_cut.idx.gz": gz(idx(0x0E, [2, 3]))[:-12],
        "gz_bad_crc.idx.gz": (lambda b: b[:-8] + bytes([b[-8] ^ 0xFF]) + b[-7:])(gz(idx(0x0B, [3]))),
        "gz_bad_length.idx.gz": (lambda b: b[:-4] + b"\x01\x00\x00\x00")(gz(idx(0x08, [2]))),
        "gz_garbage_after.idx.gz": gz(idx(0x08, [2])) + b"\x00\x00\x00",
        "gz_wrong_inner_magic.idx.gz": gz(b"\x01\x00\x08\x01\x00\x00\x00\x02\x05\x06"),
        "gz_trailing_inside.idx.gz": gz(idx(0x08, [2]) + b"\x00" * 64),
        "gz_huge_dims.idx.gz": gz(b"\x00\x00\x0C\x02" + b"\x00\x01\x00\x00" * 2 + b"\x00" * 16),
    }
    for name, data in files.items():
        assert len(data) < 2048, name
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"{len(files)} seed files in {out}")


if __name__ == "__main__":
    main()
