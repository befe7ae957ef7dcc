"""Template thumbnails for the bundled workflows.

ComfyUI lists a pack's ``workflows/*.json`` as templates and both frontends (1.27 with
ComfyUI 0.3.64, 1.49 with 0.33) fetch each card's picture from
``/api/workflow_templates/<pack>/<name>.jpg`` (``getTemplateThumbnailUrl``, media
subtype ``jpg`` for custom-node templates), i.e. ``workflows/<name>.jpg``.  No model
weights exist here to render real results, so the card shows what the workflow is: an
equirect grid (the panorama it makes), its name and the Pano360 nodes it uses.
Deterministic for one Pillow version; written by ``python -m pano360 workflows build``.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Mapping

from ..media.atomic import write_bytes
from .schema import SchemaSet

SIZE = (512, 512)
PANEL = (40, 56, 472, 272)   # the equirect panel (2:1), left, top, right, bottom
BACKGROUND = (20, 24, 36)
GRID = (120, 170, 230)
SKY, GROUND = (46, 82, 140), (58, 70, 52)
TEXT, SUBTEXT = (240, 240, 240), (170, 185, 205)
JPEG_QUALITY = 85
PACK_PREFIX = "Pano360"


# Characters Pillow's built-in font has no glyph for, as text it can draw.
_NO_GLYPH = str.maketrans({"→": "->", "←": "<-", "×": "x"})


def title_of(name: str) -> str:
    """``videopanda_text_to_360video`` -> ``videopanda text to 360video`` (the default font
    has no arrow glyph)."""
    return name.replace("_", " ")


def pack_node_names(api: Mapping, schemas: SchemaSet) -> list[str]:
    """Display names of the workflow's Pano360 nodes, in node-id order, each once."""
    names = []
    for node_id in sorted(api, key=lambda i: int(i) if str(i).isdigit() else 0):
        kind = api[node_id].get("class_type", "")
        if kind.startswith(PACK_PREFIX):
            shown = schemas[kind].display_name if kind in schemas else kind
            shown = shown.removeprefix("Pano360 ")
            if shown not in names:
                names.append(shown)
    return names


def _wrap(draw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    return lines + ([line] if line else [])


def render(name: str, api: Mapping, schemas: SchemaSet):
    """The thumbnail of workflow ``name`` as a PIL image (RGB, :data:`SIZE`)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = PANEL
    width, height = right - left, bottom - top
    for row in range(height):   # sky above the horizon, ground below, shaded towards the poles
        lat = math.pi / 2 - math.pi * (row + 0.5) / height
        base = SKY if lat > 0 else GROUND
        shade = 0.55 + 0.45 * math.cos(lat)
        draw.line([(left, top + row), (right - 1, top + row)], fill=tuple(int(c * shade) for c in base))
    for k in range(1, 12):   # meridians every 30°
        x = left + width * k / 12
        draw.line([(x, top), (x, bottom - 1)], fill=GRID, width=2 if k == 6 else 1)
    for k in range(1, 6):    # parallels every 30°
        y = top + height * k / 6
        draw.line([(left, y), (right - 1, y)], fill=GRID, width=2 if k == 3 else 1)
    # a great circle tilted by 30° (straight in 3-D, a sine in the equirect)
    points = [(left + width * i / 256, top + height / 2 - height / math.pi * math.atan(
        math.tan(math.radians(30)) * math.sin(2 * math.pi * i / 256))) for i in range(257)]
    draw.line(points, fill=(250, 200, 90), width=3)
    draw.rectangle(PANEL, outline=GRID, width=2)
    title_font = ImageFont.load_default(size=30)
    small_font = ImageFont.load_default(size=18)
    draw.text((left, 14), "Pano360 · 360°", font=small_font, fill=SUBTEXT)
    y = bottom + 18
    for line in _wrap(draw, title_of(name), title_font, width)[:2]:
        draw.text((left, y), line, font=title_font, fill=TEXT)
        y += 38
    nodes = " · ".join(pack_node_names(api, schemas)).translate(_NO_GLYPH)
    for line in _wrap(draw, nodes, small_font, width)[:4]:
        draw.text((left, y + 6), line, font=small_font, fill=SUBTEXT)
        y += 24
    return image


def write(path: Path, name: str, api: Mapping, schemas: SchemaSet) -> bool:
    """Write the JPEG thumbnail; False (and no write) when the file already has these bytes."""
    buffer = io.BytesIO()
    render(name, api, schemas).save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    data = buffer.getvalue()
    if Path(path).is_file() and Path(path).read_bytes() == data:
        return False
    write_bytes(Path(path), data, replace=True)
    return True
