"""Writes the small TIFF and NPY files tests/io.rs reads (committed; rerun to regenerate):
stacks as tifffile saves them by default, a colour image, and headers that lie about
their size. Needs numpy and tifffile (the set-up's .venv)."""
import struct
import zlib
from pathlib import Path

import numpy as np
import tifffile

HERE = Path(__file__).parent / "readers"
HERE.mkdir(exist_ok=True)


def frames(n, dtype):
    # value = 100·frame + 10·row + column, as tests/io.rs expects
    return np.fromfunction(lambda k, y, x: 100 * k + 10 * y + x, (n, 5, 7)).astype(dtype)


# tifffile takes a leading 3 or 4 for colour samples and stores one planar page
tifffile.imwrite(HERE / "n3-default.tif", frames(3, np.uint16))
tifffile.imwrite(HERE / "n4-default.tif", frames(4, np.float32))
tifffile.imwrite(HERE / "n3-minisblack.tif", frames(3, np.uint16), photometric="minisblack")
tifffile.imwrite(HERE / "rgb-chunky.tif", frames(3, np.uint8).transpose(1, 2, 0), photometric="rgb")

# A classic TIFF whose one IFD says 1048576 × 1048576 8-bit pixels in a tiny strip.
side = 1 << 20
entries = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
           (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, side), (279, 4, 1, 16)]
ifd_at = 8 + 16
ifd = struct.pack("<H", len(entries)) + b"".join(
    struct.pack("<HHI", tag, kind, count) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
    for tag, kind, count, value in entries) + struct.pack("<I", 0)
(HERE / "huge-header.tif").write_bytes(b"II*\0" + struct.pack("<I", ifd_at) + bytes(16) + ifd)

# Deflate bomb: 32 MiB of zeros per page, 4 pages, about 130 KB in all.
tifffile.imwrite(HERE / "deflate-bomb.tif", np.zeros((4, 2048, 8192), np.uint16), compression="zlib",
                 photometric="minisblack")

# NPY headers: a huge shape over a little data; a v2 header length of 2³²−1.
header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 100000), }"
header = header + " " * (63 - (10 + len(header)) % 64) + "\n"
(HERE / "huge-shape.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(4096))
(HERE / "huge-header.npy").write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**32 - 1) + bytes(64))

# A header the .npy parser rejects with a diagram over several lines.
header = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4 }"
header = header + " " * (63 - (10 + len(header)) % 64) + "\n"
(HERE / "bad-header.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(48))

# Float pages in big-endian byte order, plain and deflated (read straight into the stack).
for name, compression in [("be-float32.tif", None), ("be-float32-deflate.tif", "zlib")]:
    tifffile.imwrite(HERE / name, frames(5, np.float32), byteorder=">", compression=compression,
                     photometric="minisblack")
