"""Spherical video metadata for MP4 files: an ISO-BMFF box reader and writer.

Players (YouTube, VR headsets, desktop 360° players) only treat an MP4 as a 360° video
when its video track carries Google's spherical metadata, and ffmpeg cannot add it to a
video encoded from raw frames.  This module rewrites an encoded MP4 and adds both forms:

* **V1** (``docs/spherical-video-rfc.md`` in google/spatial-media): a ``uuid`` box with
  UUID ``ffcc8263-f855-4a93-8814-587a02521fdd`` at the end of the video ``trak``, holding
  RDF/XML in the ``GSpherical`` namespace (``Spherical``, ``Stitched``,
  ``StitchingSoftware``, ``ProjectionType``, ``StereoMode``, the pano/crop sizes and the
  initial view).
* **V2** (``docs/spherical-video-v2-rfc.md``): inside the visual sample entry (``avc1``),
  right after its codec configuration box, an optional ``st3d`` (stereo mode) and an
  ``sv3d`` box holding ``svhd`` (metadata source) and ``proj`` → ``prhd`` (pose, 16.16
  fixed point) + ``equi`` (crop bounds, 0.32 fixed point).

Inserting boxes into ``moov`` grows every enclosing box, and when ``moov`` sits before
``mdat`` (a "fast start" file) every chunk offset (``stco``/``co64``) that points past
``moov`` moves by the same amount; both are fixed up here.  Only ``moov`` is held in
memory: the media data is streamed from the source file to the destination.

:func:`read_spherical` parses the result back (every spherical field, V1 and V2) and
:func:`walk_boxes` checks that every box size is consistent; the tests use both.
"""

from __future__ import annotations

import os
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import BinaryIO, Literal, Mapping

__all__ = [
    "SPHERICAL_V1_UUID",
    "GSPHERICAL_NS",
    "STEREO_MODES",
    "SphericalMetadata",
    "inject_spherical",
    "read_spherical",
    "walk_boxes",
    "chunk_offsets",
    "top_level_boxes",
    "Mp4FormatError",
    "save_360_video",
]

# UUID of the V1 box (google/spatial-media docs/spherical-video-rfc.md, "MP4").
SPHERICAL_V1_UUID = bytes.fromhex("ffcc8263f8554a938814587a02521fdd")
GSPHERICAL_NS = "http://ns.google.com/videos/1.0/spherical/"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"

StereoMode = Literal["mono", "top-bottom", "left-right"]
# name -> st3d stereo_mode (V2 RFC, "Stereoscopic 3D Video Box"); V1 uses the names themselves.
STEREO_MODES: dict[str, int] = {"mono": 0, "top-bottom": 1, "left-right": 2}
_ST3D_NAMES = {0: "mono", 1: "top-bottom", 2: "left-right", 3: "stereo-custom", 4: "right-left"}

# Boxes whose payload is a plain list of child boxes (ISO/IEC 14496-12 plus the two
# spherical containers of the V2 RFC).
_CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"sv3d", b"proj"})
# VisualSampleEntry types whose children we edit.  Their payload starts with 78 bytes of
# fixed fields (ISO/IEC 14496-12 §12.1.3: SampleEntry 8 + VisualSampleEntry 70).
_VISUAL_SAMPLE_ENTRIES = frozenset({b"avc1", b"avc3", b"hvc1", b"hev1", b"av01", b"vp09", b"mp4v"})
_VISUAL_SAMPLE_ENTRY_FIELDS = 78
# Codec configuration boxes: the mandatory child of a sample entry; V2 boxes go right after.
_CODEC_CONFIG_BOXES = frozenset({b"avcC", b"hvcC", b"av1C", b"vpcC", b"esds"})
_STSD_HEADER = 8  # FullBox version/flags + entry_count
_FIXED_16_16 = 1 << 16
_FIXED_0_32 = 1 << 32
_UINT32_MAX = 0xFFFFFFFF


class Mp4FormatError(ValueError):
    """The file is not an MP4 this module can edit (names the file and the problem)."""


@dataclass(frozen=True)
class SphericalMetadata:
    """What to write.  Angles in degrees.

    stereo_mode: frame layout; "top-bottom" = left eye on top, "left-right" = left eye on
        the left (V2 RFC ``st3d``; V1 ``StereoMode``).
    pose_*: ``prhd`` pose of the projection (V2 RFC: yaw counter-clockwise about up,
        pitch counter-clockwise about right, roll clockwise about forward).  Pano360 writes
        its equirects in canonical pose (centre column = forward), so these stay 0.
    initial_view_*: V1 initial view (integers in the V1 RFC).
    crop_*: V2 ``equi`` projection bounds, fractions of the frame cropped from each edge.
    software: V1 ``StitchingSoftware`` and V2 ``svhd`` metadata_source.
    """

    stereo_mode: StereoMode = "mono"
    pose_yaw_deg: float = 0.0
    pose_pitch_deg: float = 0.0
    pose_roll_deg: float = 0.0
    initial_view_heading_deg: int = 0
    initial_view_pitch_deg: int = 0
    initial_view_roll_deg: int = 0
    crop_top: float = 0.0
    crop_bottom: float = 0.0
    crop_left: float = 0.0
    crop_right: float = 0.0
    software: str = "Pano360"

    def __post_init__(self):
        if self.stereo_mode not in STEREO_MODES:
            raise ValueError(f"stereo_mode must be one of {sorted(STEREO_MODES)}, got {self.stereo_mode!r}")
        for name, lo, hi in (("pose_yaw_deg", -180, 180), ("pose_pitch_deg", -90, 90), ("pose_roll_deg", -180, 180)):
            if not lo <= getattr(self, name) <= hi:
                raise ValueError(f"{name} must be in [{lo}, {hi}] (V2 RFC prhd), got {getattr(self, name)}")
        for name in ("crop_top", "crop_bottom", "crop_left", "crop_right"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1), got {getattr(self, name)}")
        if self.crop_top + self.crop_bottom >= 1.0 or self.crop_left + self.crop_right >= 1.0:
            raise ValueError("crop bounds leave no picture: top+bottom and left+right must be < 1")
        if "\x00" in self.software:
            raise ValueError("software must not contain NUL characters")


# --------------------------------------------------------------------------- box tree


@dataclass
class _Box:
    """A parsed box.  Leaves keep their payload; containers keep ``prefix`` (fixed fields
    before the children: stsd's entry count, a sample entry's 78 bytes) and children."""

    type: bytes
    payload: bytes = b""
    children: list["_Box"] | None = None
    prefix: bytes = b""

    def serialize(self) -> bytes:
        if self.children is None:
            body = self.payload
        else:
            body = self.prefix + b"".join(c.serialize() for c in self.children)
        size = 8 + len(body)
        if size <= _UINT32_MAX:
            return struct.pack(">I4s", size, self.type) + body
        return struct.pack(">I4sQ", 1, self.type, size + 8) + body

    def find(self, *path: bytes) -> "_Box | None":
        box = self
        for t in path:
            box = next((c for c in box.children or () if c.type == t), None)
            if box is None:
                return None
        return box


def _read_header(data: bytes, pos: int, end: int, where: str) -> tuple[bytes, int, int]:
    """(type, header size, total size) of the box at ``pos``; ``end`` bounds it."""
    if end - pos < 8:
        raise Mp4FormatError(f"{where}: truncated box header at byte {pos}")
    size, btype = struct.unpack_from(">I4s", data, pos)
    header = 8
    if size == 1:
        if end - pos < 16:
            raise Mp4FormatError(f"{where}: truncated 64-bit box header at byte {pos}")
        (size,) = struct.unpack_from(">Q", data, pos + 8)
        header = 16
    elif size == 0:
        size = end - pos
    if size < header or pos + size > end:
        raise Mp4FormatError(
            f"{where}: box {btype!r} at byte {pos} has size {size}, which does not fit its parent (ends at {end})"
        )
    return btype, header, size


def _parse(data: bytes, start: int, end: int, where: str, parent: bytes = b"") -> list[_Box]:
    boxes = []
    pos = start
    while pos < end:
        btype, header, size = _read_header(data, pos, end, where)
        payload = data[pos + header : pos + size]
        if btype in _CONTAINERS:
            box = _Box(btype, children=_parse(data, pos + header, pos + size, where, btype))
        elif btype == b"stsd":
            box = _Box(btype, prefix=payload[:_STSD_HEADER],
                       children=_parse(data, pos + header + _STSD_HEADER, pos + size, where, btype))
        elif parent == b"stsd" and btype in _VISUAL_SAMPLE_ENTRIES:
            n = _VISUAL_SAMPLE_ENTRY_FIELDS
            box = _Box(btype, prefix=payload[:n], children=_parse(data, pos + header + n, pos + size, where, btype))
        else:
            box = _Box(btype, payload=payload)
        boxes.append(box)
        pos += size
    return boxes


def _top_level(f: BinaryIO, where: str) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of every top-level box, reading only headers."""
    f.seek(0, os.SEEK_END)
    file_size = f.tell()
    boxes, pos = [], 0
    while pos < file_size:
        f.seek(pos)
        head = f.read(16)
        if len(head) < 8:
            raise Mp4FormatError(f"{where}: truncated box header at byte {pos}")
        size, btype = struct.unpack_from(">I4s", head)
        if size == 1:
            if len(head) < 16:
                raise Mp4FormatError(f"{where}: truncated 64-bit box header at byte {pos}")
            (size,) = struct.unpack_from(">Q", head, 8)
        elif size == 0:
            size = file_size - pos
        if size < 8 or pos + size > file_size:
            raise Mp4FormatError(f"{where}: top-level box {btype!r} at byte {pos} has size {size}, file has {file_size}")
        boxes.append((btype, pos, size))
        pos += size
    return boxes


def _parse_moov(data: bytes, where: str) -> _Box:
    btype, header, size = _read_header(data, 0, len(data), where)
    if btype != b"moov":
        raise Mp4FormatError(f"{where}: expected a moov box, got {btype!r}")
    return _Box(b"moov", children=_parse(data, header, size, where, b"moov"))


def _read_moov(f: BinaryIO, top: list[tuple[bytes, int, int]], where: str) -> tuple[_Box, int, int]:
    moovs = [(o, s) for t, o, s in top if t == b"moov"]
    if len(moovs) != 1:
        raise Mp4FormatError(f"{where}: expected exactly one moov box, found {len(moovs)}")
    offset, size = moovs[0]
    f.seek(offset)
    return _parse_moov(f.read(size), where), offset, size


def walk_boxes(path: str | os.PathLike) -> list[tuple[str, int]]:
    """Every box of the file as ``("moov/trak/mdia/...", size)``, depth first.

    Raises :class:`Mp4FormatError` if any size is inconsistent with its parent, so a
    successful walk proves that every enclosing size was fixed up.
    """
    where = os.fspath(path)
    out: list[tuple[str, int]] = []
    with open(path, "rb") as f:
        for btype, offset, size in _top_level(f, where):
            out.append((btype.decode("latin-1"), size))
            if btype == b"moov":
                f.seek(offset)
                moov = _parse_moov(f.read(size), where)

                def rec(boxes, prefix):
                    for b in boxes:
                        name = f"{prefix}/{b.type.decode('latin-1')}"
                        out.append((name, len(b.serialize())))
                        if b.children is not None:
                            rec(b.children, name)

                rec(moov.children, "moov")
    return out


# --------------------------------------------------------------------------- writing


def _full_box(btype: bytes, body: bytes, version: int = 0, flags: int = 0) -> _Box:
    return _Box(btype, payload=struct.pack(">I", (version << 24) | flags) + body)


def _mdta_udta(tags: Mapping[str, str]) -> _Box:
    """``moov/udta/meta`` holding ``tags`` as QuickTime ``mdta`` keys, the layout ffmpeg writes
    with ``-movflags use_metadata_tags`` (what ComfyUI's SaveVideo uses for its ``prompt`` and
    ``workflow`` through PyAV; ffprobe lists them as format tags): ``hdlr`` of type ``mdta``,
    ``keys`` (``mdta`` + name per key) and ``ilst`` (item *i*, 1-based, holds a ``data`` box of
    well-known type 1, UTF-8)."""
    hdlr = _full_box(b"hdlr", struct.pack(">I4s", 0, b"mdta") + bytes(12) + b"\0")
    names = [k.encode("utf-8") for k in tags]
    keys = _full_box(b"keys", struct.pack(">I", len(names))
                     + b"".join(struct.pack(">I4s", 8 + len(n), b"mdta") + n for n in names))
    items = [_Box(struct.pack(">I", i), children=[_Box(b"data", payload=struct.pack(">II", 1, 0) + v.encode("utf-8"))])
             for i, v in enumerate(tags.values(), start=1)]
    meta = _Box(b"meta", prefix=struct.pack(">I", 0), children=[hdlr, keys, _Box(b"ilst", children=items)])
    return _Box(b"udta", children=[meta])


def _v1_xml(meta: SphericalMetadata, width: int, height: int) -> bytes:
    """V1 RDF/XML.  Pano sizes follow the V1 RFC's stereo table (per eye)."""
    eye_w = width // 2 if meta.stereo_mode == "left-right" else width
    eye_h = height // 2 if meta.stereo_mode == "top-bottom" else height
    fields = [
        ("Spherical", "true"),
        ("Stitched", "true"),
        ("StitchingSoftware", meta.software),
        ("ProjectionType", "equirectangular"),
        ("StereoMode", meta.stereo_mode),
        ("InitialViewHeadingDegrees", str(int(meta.initial_view_heading_deg))),
        ("InitialViewPitchDegrees", str(int(meta.initial_view_pitch_deg))),
        ("InitialViewRollDegrees", str(int(meta.initial_view_roll_deg))),
        ("FullPanoWidthPixels", str(eye_w)),
        ("FullPanoHeightPixels", str(eye_h)),
        ("CroppedAreaImageWidthPixels", str(eye_w)),
        ("CroppedAreaImageHeightPixels", str(eye_h)),
        ("CroppedAreaLeftPixels", "0"),
        ("CroppedAreaTopPixels", "0"),
    ]
    root = ET.Element("rdf:SphericalVideo", {"xmlns:rdf": RDF_NS, "xmlns:GSpherical": GSPHERICAL_NS})
    for name, value in fields:
        ET.SubElement(root, f"GSpherical:{name}").text = value
    return b'<?xml version="1.0"?>' + ET.tostring(root, encoding="utf-8", xml_declaration=False)


def _v2_boxes(meta: SphericalMetadata) -> list[_Box]:
    st3d = _full_box(b"st3d", struct.pack(">B", STEREO_MODES[meta.stereo_mode]))
    svhd = _full_box(b"svhd", meta.software.encode("utf-8") + b"\0")
    prhd = _full_box(b"prhd", struct.pack(
        ">iii", *(round(v * _FIXED_16_16) for v in (meta.pose_yaw_deg, meta.pose_pitch_deg, meta.pose_roll_deg))))
    equi = _full_box(b"equi", struct.pack(">IIII", *(
        min(round(v * _FIXED_0_32), _UINT32_MAX)
        for v in (meta.crop_top, meta.crop_bottom, meta.crop_left, meta.crop_right))))
    sv3d = _Box(b"sv3d", children=[svhd, _Box(b"proj", children=[prhd, equi])])
    return [st3d, sv3d]


def _handler(trak: _Box) -> bytes:
    hdlr = trak.find(b"mdia", b"hdlr")
    # hdlr: FullBox(4) + pre_defined(4) + handler_type(4)
    return hdlr.payload[8:12] if hdlr is not None and len(hdlr.payload) >= 12 else b""


def _video_sample_entry(trak: _Box, where: str) -> _Box:
    stsd = trak.find(b"mdia", b"minf", b"stbl", b"stsd")
    if stsd is None or not stsd.children:
        raise Mp4FormatError(f"{where}: video track has no sample description (stsd)")
    entry = stsd.children[0]
    if entry.children is None:
        raise Mp4FormatError(
            f"{where}: video codec {entry.type.decode('latin-1')!r} is not supported; expected one of "
            f"{sorted(t.decode() for t in _VISUAL_SAMPLE_ENTRIES)}"
        )
    return entry


def _add_metadata(moov: _Box, meta: SphericalMetadata, v1: bool, v2: bool, where: str) -> int:
    """Insert V1/V2 into every video track of ``moov`` (replacing old ones); returns the count."""
    count = 0
    for trak in (c for c in moov.children if c.type == b"trak"):
        if _handler(trak) != b"vide":
            continue
        entry = _video_sample_entry(trak, where)
        width, height = struct.unpack_from(">HH", entry.prefix, 24)  # after 8 + 16 bytes of fields
        # Re-injection replaces what is there instead of stacking a second copy.
        entry.children = [c for c in entry.children if c.type not in (b"st3d", b"sv3d")]
        trak.children = [c for c in trak.children if not (c.type == b"uuid" and c.payload[:16] == SPHERICAL_V1_UUID)]
        if v2:
            config = [i for i, c in enumerate(entry.children) if c.type in _CODEC_CONFIG_BOXES]
            if not config:
                raise Mp4FormatError(f"{where}: sample entry {entry.type!r} has no codec configuration box")
            at = config[-1] + 1
            entry.children[at:at] = _v2_boxes(meta)
        if v1:
            trak.children.append(_Box(b"uuid", payload=SPHERICAL_V1_UUID + _v1_xml(meta, width, height)))
        count += 1
    return count


def _shift_chunk_offsets(moov: _Box, after: int, delta: int) -> None:
    """Add ``delta`` to every chunk offset >= ``after`` (media that lies behind moov).

    A 32-bit ``stco`` that would overflow becomes a ``co64``."""
    for trak in (c for c in moov.children if c.type == b"trak"):
        stbl = trak.find(b"mdia", b"minf", b"stbl")
        if stbl is None:
            continue
        for i, box in enumerate(stbl.children):
            if box.type not in (b"stco", b"co64"):
                continue
            fmt = ">I" if box.type == b"stco" else ">Q"
            (n,) = struct.unpack_from(">I", box.payload, 4)
            offsets = struct.unpack_from(f">{n}{fmt[1]}", box.payload, 8)
            offsets = [o + delta if o >= after else o for o in offsets]
            btype = box.type
            if btype == b"stco" and max(offsets, default=0) > _UINT32_MAX:
                btype, fmt = b"co64", ">Q"
            stbl.children[i] = _Box(btype, payload=box.payload[:8] + struct.pack(f">{n}{fmt[1]}", *offsets))


def inject_spherical(src: str | os.PathLike, dst: str | os.PathLike, meta: SphericalMetadata = SphericalMetadata(),
                     *, v1: bool = True, v2: bool = True, tags: Mapping[str, str] | None = None) -> int:
    """Copy the MP4 ``src`` to ``dst`` with spherical metadata on every video track.

    src, dst: paths (must differ).  meta: what to write.  v1, v2: which forms to write
    (both by default: players differ in which they read).  Returns the number of tagged
    video tracks.  Raises :class:`Mp4FormatError` for files without ``moov`` or a video
    track, or with a codec this writer does not know.  ``dst`` is written directly:
    callers that need atomicity write to a temporary name and rename (see :mod:`.atomic`).
    tags: file-level text tags (ComfyUI's ``prompt``, ``workflow``, ... as JSON), written as
    ``moov/udta`` in ffmpeg's ``mdta`` layout in place of the encoder's own ``udta``.
    """
    where = os.fspath(src)
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ValueError(f"dst must differ from src, got {where!r} for both")
    if not (v1 or v2):
        raise ValueError("at least one of v1, v2 must be True")
    with open(src, "rb") as f:
        top = _top_level(f, where)
        moov, moov_off, moov_size = _read_moov(f, top, where)
        tagged = _add_metadata(moov, meta, v1, v2, where)
        if tagged == 0:
            raise Mp4FormatError(f"{where}: no video track (hdlr 'vide') found")
        if tags:
            moov.children = [c for c in moov.children if c.type != b"udta"] + [_mdta_udta(tags)]
        # Media behind moov moves by moov's growth.  A stco that overflows becomes a co64,
        # which grows moov again, so iterate to a fixed point (bounded by the track count).
        base = moov.serialize()
        delta = len(base) - moov_size
        for _ in range(len(moov.children) + 2):
            shifted = _parse_moov(base, where)
            _shift_chunk_offsets(shifted, moov_off + moov_size, delta)
            new = shifted.serialize()
            if len(new) - moov_size == delta:
                break
            delta = len(new) - moov_size
        else:
            raise Mp4FormatError(f"{where}: chunk offsets did not settle after growing moov")
        with open(dst, "wb") as out:
            for btype, offset, size in top:
                if btype == b"moov":
                    out.write(new)
                else:
                    f.seek(offset)
                    _copy_range(f, out, size)
    return tagged


def _copy_range(src: BinaryIO, dst: BinaryIO, n: int, chunk: int = 1 << 20) -> None:
    while n > 0:
        buf = src.read(min(chunk, n))
        if not buf:
            raise Mp4FormatError("source file ended early while copying media data")
        dst.write(buf)
        n -= len(buf)


# --------------------------------------------------------------------------- reading


def _parse_v1(xml: bytes) -> dict:
    root = ET.fromstring(xml)
    out: dict = {}
    for el in root:
        if not el.tag.startswith("{" + GSPHERICAL_NS + "}"):
            continue
        name, text = el.tag.split("}", 1)[1], (el.text or "").strip()
        if text.lower() in ("true", "false"):
            out[name] = text.lower() == "true"
        else:
            try:
                out[name] = int(text)
            except ValueError:
                out[name] = text
    return out


def _parse_v2(entry: _Box) -> dict | None:
    out: dict = {}
    st3d = entry.find(b"st3d")
    if st3d is not None:
        vf, mode = struct.unpack_from(">IB", st3d.payload)
        out["st3d"] = {"version": vf >> 24, "flags": vf & 0xFFFFFF, "stereo_mode": mode,
                       "stereo_mode_name": _ST3D_NAMES.get(mode, "reserved")}
    sv3d = entry.find(b"sv3d")
    if sv3d is not None:
        svhd = sv3d.find(b"svhd")
        if svhd is not None:
            (vf,) = struct.unpack_from(">I", svhd.payload)
            out["svhd"] = {"version": vf >> 24, "flags": vf & 0xFFFFFF,
                           "metadata_source": svhd.payload[4:].split(b"\0", 1)[0].decode("utf-8")}
        prhd = sv3d.find(b"proj", b"prhd")
        if prhd is not None:
            vf, yaw, pitch, roll = struct.unpack_from(">Iiii", prhd.payload)
            out["prhd"] = {"version": vf >> 24, "flags": vf & 0xFFFFFF, "pose_yaw_deg": yaw / _FIXED_16_16,
                           "pose_pitch_deg": pitch / _FIXED_16_16, "pose_roll_deg": roll / _FIXED_16_16}
        equi = sv3d.find(b"proj", b"equi")
        if equi is not None:
            vf, t, b, l, r = struct.unpack_from(">IIIII", equi.payload)
            out["equi"] = {"version": vf >> 24, "flags": vf & 0xFFFFFF, "bounds_top": t / _FIXED_0_32,
                           "bounds_bottom": b / _FIXED_0_32, "bounds_left": l / _FIXED_0_32,
                           "bounds_right": r / _FIXED_0_32}
        out["proj_children"] = [c.type.decode("latin-1") for c in (sv3d.find(b"proj").children or [])] \
            if sv3d.find(b"proj") is not None else []
        out["sv3d_children"] = [c.type.decode("latin-1") for c in sv3d.children]
    out["sample_entry_children"] = [c.type.decode("latin-1") for c in entry.children]
    return out


def read_spherical(path: str | os.PathLike) -> list[dict]:
    """Spherical metadata of every video track, in track order.

    Each item: ``{"codec": "avc1", "width", "height", "v1": {field: value} | None,
    "v2": {"st3d": {...}, "svhd": {...}, "prhd": {...}, "equi": {...},
    "sample_entry_children": [...], ...}}``.  V1 values are typed (bool, int, str);
    V2 pose in degrees, bounds as fractions.
    """
    where = os.fspath(path)
    with open(path, "rb") as f:
        moov = _read_moov(f, _top_level(f, where), where)[0]
    tracks = []
    for trak in (c for c in moov.children if c.type == b"trak"):
        if _handler(trak) != b"vide":
            continue
        entry = _video_sample_entry(trak, where)
        width, height = struct.unpack_from(">HH", entry.prefix, 24)
        v1 = next((_parse_v1(c.payload[16:]) for c in trak.children
                   if c.type == b"uuid" and c.payload[:16] == SPHERICAL_V1_UUID), None)
        v2 = _parse_v2(entry)
        has_v2 = "st3d" in v2 or "sv3d_children" in v2
        tracks.append({"codec": entry.type.decode("latin-1"), "width": width, "height": height,
                       "v1": v1, "v2": v2 if has_v2 else None})
    return tracks


def chunk_offsets(path: str | os.PathLike) -> list[list[int]]:
    """Every track's chunk offsets (stco/co64), for tests of the offset fix-up."""
    where = os.fspath(path)
    with open(path, "rb") as f:
        moov = _read_moov(f, _top_level(f, where), where)[0]
    result = []
    for trak in (c for c in moov.children if c.type == b"trak"):
        stbl = trak.find(b"mdia", b"minf", b"stbl")
        for box in stbl.children if stbl is not None else ():
            if box.type in (b"stco", b"co64"):
                (n,) = struct.unpack_from(">I", box.payload, 4)
                result.append(list(struct.unpack_from(f">{n}{'I' if box.type == b'stco' else 'Q'}", box.payload, 8)))
    return result


def top_level_boxes(path: str | os.PathLike) -> list[tuple[str, int, int]]:
    """(type, offset, size) of every top-level box."""
    with open(path, "rb") as f:
        return [(t.decode("latin-1"), o, s) for t, o, s in _top_level(f, os.fspath(path))]


# --------------------------------------------------------------------------- saving


def save_360_video(frames, path: str | os.PathLike, fps: float, crf: int,
                   meta: SphericalMetadata = SphericalMetadata(), *, callback=None, replace: bool = False,
                   next_free=None, tags: Mapping[str, str] | None = None) -> str:
    """Encode equirect ``frames`` (uint8 ``[T, H, W, 3]``, even sizes) to an H.264 MP4
    at ``path`` carrying V1 and V2 spherical metadata.  Returns ``path``.

    The file appears only when complete: encoding and injection work on hidden
    temporary files in the same folder, then one rename; on failure nothing is left.
    callback(done, total): after each frame encoded (progress; raising aborts, e.g. Cancel).
    tags: text tags of the file (ComfyUI's prompt/workflow JSON), see :func:`inject_spherical`.
    An existing ``path`` is replaced only with ``replace`` (else ``FileExistsError``, or with
    ``next_free`` the first free name from ``path`` on); returns the path written.
    """
    from .atomic import atomic_path, temp_path_beside
    from .video import write_mp4

    encoded = temp_path_beside(path, ".enc.mp4")
    try:
        with (target := atomic_path(path, ".mp4", replace=replace, next_free=next_free)) as tagged:
            write_mp4(frames, encoded, fps, crf, callback=callback, replace=True)
            inject_spherical(encoded, tagged, meta, tags=tags)
    finally:
        if os.path.exists(encoded):
            os.remove(encoded)
    return target.path
