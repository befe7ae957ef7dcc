"""Equirect PNG and JPEG files that photo viewers open as panoramas (GPano XMP).

Google's Photo Sphere XMP (namespace ``http://ns.google.com/photos/1.0/panorama/``,
developers.google.com/streetview/spherical-metadata) marks an image as a 360° panorama.
It is stored as an XMP packet:

* PNG: an ``iTXt`` chunk with keyword ``XML:com.adobe.xmp`` (XMP spec part 3, "PNG"),
  next to the ``tEXt`` chunks ``prompt`` and ``workflow`` that ComfyUI's SaveImage writes,
  so dropping the file on ComfyUI still restores the graph.
* JPEG: an APP1 segment starting with ``http://ns.adobe.com/xap/1.0/\\0`` (XMP spec
  part 3, "JPEG"), placed right after SOI and any APP0 (JFIF) segment.

Readers here parse the containers themselves (PNG chunks with CRC check, JPEG
markers) so tests check what is actually in the file.
"""

from __future__ import annotations

import io
import os
import struct
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass

import numpy as np

from . import images
from .atomic import NameChooser, atomic_path

__all__ = ["GPANO_NS", "GPanoFields", "build_xmp", "save_png", "save_jpeg", "read_gpano", "read_png_text"]

GPANO_NS = "http://ns.google.com/photos/1.0/panorama/"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XMP_META_NS = "adobe:ns:meta/"
PNG_XMP_KEYWORD = "XML:com.adobe.xmp"
JPEG_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# An APP segment's length field is 16 bits and counts itself (JPEG, ITU T.81 B.1.1.4).
JPEG_SEGMENT_MAX = 0xFFFF - 2
# XMP packet wrapper id (XMP spec part 1, 7.3.2).
XPACKET_ID = "W5M0MpCehiHzreSzNTczkc9d"


@dataclass(frozen=True)
class GPanoFields:
    """GPano values for a full (uncropped) equirect of ``width`` x ``height`` pixels.

    initial_heading_deg: where viewers open, as a yaw in the pack convention (+ = right of
        the image centre); GPano headings are compass degrees clockwise, which is the same
        turning sense, so InitialViewHeadingDegrees = (pose_heading + yaw) mod 360.
    pose_heading_deg: compass heading of the image centre (GPano PoseHeadingDegrees).
    """

    width: int
    height: int
    initial_heading_deg: float = 0.0
    initial_pitch_deg: float = 0.0
    pose_heading_deg: float = 0.0
    software: str = "Pano360"

    def __post_init__(self):
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"width and height must be positive, got {self.width}x{self.height}")
        if not 0.0 <= self.pose_heading_deg < 360.0:
            raise ValueError(f"pose_heading_deg must be in [0, 360) (GPano), got {self.pose_heading_deg}")
        if not -90.0 <= self.initial_pitch_deg <= 90.0:
            raise ValueError(f"initial_pitch_deg must be in [-90, 90], got {self.initial_pitch_deg}")

    def as_dict(self) -> dict:
        """Field name -> value, typed as in the GPano table (Boolean, Integer, Real, Text)."""
        return {
            "ProjectionType": "equirectangular",
            "UsePanoramaViewer": True,
            "StitchingSoftware": self.software,
            "FullPanoWidthPixels": self.width,
            "FullPanoHeightPixels": self.height,
            "CroppedAreaImageWidthPixels": self.width,
            "CroppedAreaImageHeightPixels": self.height,
            "CroppedAreaLeftPixels": 0,
            "CroppedAreaTopPixels": 0,
            "PoseHeadingDegrees": float(self.pose_heading_deg),
            "InitialViewHeadingDegrees": int(round(self.pose_heading_deg + self.initial_heading_deg)) % 360,
            "InitialViewPitchDegrees": int(round(self.initial_pitch_deg)),
        }


def _xmp_text(value) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def build_xmp(fields: GPanoFields) -> str:
    """The XMP packet (UTF-8 text) holding the GPano fields as rdf:Description elements."""
    meta = ET.Element("x:xmpmeta", {"xmlns:x": XMP_META_NS})
    rdf = ET.SubElement(meta, "rdf:RDF", {"xmlns:rdf": RDF_NS})
    desc = ET.SubElement(rdf, "rdf:Description", {"rdf:about": "", "xmlns:GPano": GPANO_NS})
    for name, value in fields.as_dict().items():
        ET.SubElement(desc, f"GPano:{name}").text = _xmp_text(value)
    body = ET.tostring(meta, encoding="unicode")
    return f'<?xpacket begin="\ufeff" id="{XPACKET_ID}"?>{body}<?xpacket end="w"?>'


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        got = f"{type(image).__name__} {getattr(image, 'dtype', '')} {list(getattr(image, 'shape', []))}"
        raise ValueError(f"image must be a uint8 array [H, W, 3], got {got}")


def save_png(image: np.ndarray, path: str | os.PathLike, fields: GPanoFields,
             text: dict[str, str] | None = None, compress_level: int = 4, *, replace: bool = False,
             next_free: NameChooser | None = None) -> str:
    """Write ``image`` (uint8 ``[H, W, 3]``) as PNG with GPano XMP and ``text`` tEXt chunks
    (ComfyUI's ``prompt``/``workflow`` JSON).  Atomic: the file appears only when complete.
    Returns the path written (``next_free``: see :class:`.atomic.atomic_path`)."""
    from PIL import PngImagePlugin

    _check_image(image)
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    info.add_itxt(PNG_XMP_KEYWORD, build_xmp(fields), lang="", tkey="", zip=False)
    return images.save_png(image, path, replace=replace, pnginfo=info, compress_level=compress_level,
                           next_free=next_free)


def save_jpeg(image: np.ndarray, path: str | os.PathLike, fields: GPanoFields, quality: int = 95, *,
              replace: bool = False, next_free: NameChooser | None = None) -> str:
    """Write ``image`` (uint8 ``[H, W, 3]``) as JPEG with a GPano XMP APP1 segment.  Atomic."""
    from PIL import Image

    _check_image(image)
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    data = _insert_jpeg_app1(buf.getvalue(), JPEG_XMP_HEADER + build_xmp(fields).encode("utf-8"))
    with (target := atomic_path(path, ".jpg", replace=replace, next_free=next_free)) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return target.path


def _insert_jpeg_app1(jpeg: bytes, payload: bytes) -> bytes:
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream (no SOI marker)")
    if len(payload) > JPEG_SEGMENT_MAX:
        raise ValueError(f"XMP packet of {len(payload)} bytes does not fit one APP1 segment")
    pos = 2
    if jpeg[pos : pos + 2] == b"\xff\xe0":  # keep JFIF APP0 first
        (n,) = struct.unpack_from(">H", jpeg, pos + 2)
        pos += 2 + n
    return jpeg[:pos] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[pos:]


# --------------------------------------------------------------------------- reading


def _png_chunks(data: bytes, where: str):
    if data[:8] != PNG_SIGNATURE:
        raise ValueError(f"{where}: not a PNG file")
    pos = 8
    while pos + 12 <= len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        ctype = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + n)
        if zlib.crc32(ctype + body) != crc:
            raise ValueError(f"{where}: CRC mismatch in PNG chunk {ctype!r}")
        yield ctype, body
        pos += 12 + n
        if ctype == b"IEND":
            return


def read_png_text(path: str | os.PathLike) -> dict[str, str]:
    """Every tEXt / iTXt (uncompressed or compressed) chunk of a PNG as keyword -> text."""
    with open(path, "rb") as f:
        data = f.read()
    out = {}
    for ctype, body in _png_chunks(data, os.fspath(path)):
        if ctype == b"tEXt":
            key, value = body.split(b"\0", 1)
            out[key.decode("latin-1")] = value.decode("latin-1")
        elif ctype == b"iTXt":
            key, rest = body.split(b"\0", 1)
            compressed, _method = rest[0], rest[1]
            _lang, rest = rest[2:].split(b"\0", 1)
            _tkey, text = rest.split(b"\0", 1)
            out[key.decode("latin-1")] = (zlib.decompress(text) if compressed else text).decode("utf-8")
    return out


def _jpeg_xmp(data: bytes, where: str) -> str | None:
    if data[:2] != b"\xff\xd8":
        raise ValueError(f"{where}: not a JPEG file")
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: no more metadata segments
            break
        (n,) = struct.unpack_from(">H", data, pos + 2)
        seg = data[pos + 4 : pos + 2 + n]
        if marker == 0xE1 and seg.startswith(JPEG_XMP_HEADER):
            return seg[len(JPEG_XMP_HEADER) :].decode("utf-8")
        pos += 2 + n
    return None


def _parse_gpano(xmp: str) -> dict:
    start, end = xmp.find("<x:xmpmeta"), xmp.rfind("</x:xmpmeta>")
    root = ET.fromstring(xmp[start : end + len("</x:xmpmeta>")])
    out: dict = {}
    prefix = "{" + GPANO_NS + "}"
    for desc in root.iter("{" + RDF_NS + "}Description"):
        items = [(k, v) for k, v in desc.attrib.items()] + [(el.tag, el.text or "") for el in desc]
        for tag, text in items:
            if not tag.startswith(prefix):
                continue
            name, text = tag[len(prefix) :], text.strip()
            if text in ("True", "False"):
                out[name] = text == "True"
            else:
                try:
                    out[name] = int(text)
                except ValueError:
                    try:
                        out[name] = float(text)
                    except ValueError:
                        out[name] = text
    return out


def read_gpano(path: str | os.PathLike) -> dict:
    """The GPano fields of a PNG or JPEG (typed: bool, int, float, str); {} if none."""
    where = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] == PNG_SIGNATURE:
        xmp = read_png_text(path).get(PNG_XMP_KEYWORD)
    else:
        xmp = _jpeg_xmp(data, where)
    return _parse_gpano(xmp) if xmp else {}
