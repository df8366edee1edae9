"""Scan a NIfTI file as a byte stream: completeness against its header and NaN/Inf in float data.

SimpleITK (ITK's NIfTI reader) reads a truncated ``.nii.gz`` without an error and silently replaces NaN/Inf voxels
by 0, so every reader that must refuse such files (the integrity check, ``read_images``) scans the bytes here.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np

_CHUNK = 1 << 20


@dataclass
class _NiftiLayout:
    vox_offset: int
    data_bytes: int
    float_dtype: Optional[np.dtype]  # set for float32/float64 data, whose NaN/Inf SimpleITK silently zeroes


def _nifti_layout(header: bytes) -> Optional[_NiftiLayout]:
    """Data offset, size and float type from a NIfTI-1/2 header (None when the bytes are not a NIfTI header)."""
    for endian in ("<", ">"):
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", header[70:74])
            vox_offset = int(struct.unpack(endian + "f", header[108:112])[0])
        elif len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            datatype, bitpix = struct.unpack(endian + "2h", header[12:16])
            dims = struct.unpack(endian + "8q", header[16:80])
            vox_offset = struct.unpack(endian + "q", header[168:176])[0]
        else:
            continue
        n_dims = max(0, min(int(dims[0]), 7))
        voxels = int(np.prod([max(int(d), 1) for d in dims[1:n_dims + 1]], dtype=np.int64))
        float_dtype = {16: np.dtype(endian + "f4"), 64: np.dtype(endian + "f8")}.get(int(datatype))
        return _NiftiLayout(vox_offset, voxels * max(int(bitpix), 8) // 8, float_dtype)
    return None


def _chunks(path: Path) -> Iterator[bytes]:
    """The decompressed bytes of a .nii.gz (or the bytes of a .nii) in chunks; EOFError if the gzip is cut."""
    with open(path, "rb") as f:
        if not path.name.lower().endswith(".gz"):
            while chunk := f.read(_CHUNK):
                yield chunk
            return
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while chunk := f.read(_CHUNK):
            yield decompressor.decompress(chunk)
            if decompressor.eof:
                return
        raise EOFError("truncated gzip stream (compressed file ended before its end marker)")


def scan_nifti(path: Path) -> Tuple[Optional[str], int]:
    """Read a .nii/.nii.gz byte stream: ``(problem or None, number of NaN/Inf voxels)``.

    SimpleITK reads a truncated .nii.gz without an error and replaces NaN/Inf by 0, so both are checked here.
    """
    header = b""
    layout: Optional[_NiftiLayout] = None
    position = 0  # bytes of the decompressed stream seen so far
    nonfinite = 0
    carry = b""
    try:
        for chunk in _chunks(path):
            start = position
            position += len(chunk)
            if layout is None:
                header += chunk[:540 - len(header)]
                if len(header) < 540 and position < 540:
                    continue
                layout = _nifti_layout(header)
                if layout is None:
                    return "not a NIfTI file (bad header)", 0
            if layout.float_dtype is not None:
                lo = max(layout.vox_offset - start, 0)
                hi = min(layout.vox_offset + layout.data_bytes - start, len(chunk))
                if hi > lo:
                    data = carry + chunk[lo:hi]
                    usable = len(data) - len(data) % layout.float_dtype.itemsize
                    values = np.frombuffer(data[:usable], dtype=layout.float_dtype)
                    nonfinite += int(np.count_nonzero(~np.isfinite(values)))
                    carry = data[usable:]
    except (OSError, zlib.error, EOFError) as exc:
        return f"corrupt or truncated file ({exc})", nonfinite
    if layout is None:
        layout = _nifti_layout(header)
        if layout is None:
            return "not a NIfTI file (bad header)", 0
    if position < layout.vox_offset + layout.data_bytes:
        return f"truncated: {position} bytes, the header needs {layout.vox_offset + layout.data_bytes}", nonfinite
    return None, nonfinite
