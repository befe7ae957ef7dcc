"""One reader and one writer per camera pose file format.

- :mod:`.realestate10k`: RealEstate10K camera files (the ``pose.txt`` of Look Beyond's video
  stage, and what the Perspective Loop node writes).
- :mod:`.megasam`: MegaSaM's ``.npz`` output (Argus's camera source).
- :mod:`.argus_txt`: Argus's cached ``motion/<name>.txt`` and ``fov/<name>.txt``.

Readers return a :class:`..path.CameraPath`; writers take one.  Host-free.
"""

from .argus_txt import read_argus_motion, write_argus_motion
from .megasam import read_megasam_npz
from .realestate10k import CameraRow, format_rows, parse_rows, read_realestate10k, rows_from_path, write_realestate10k

__all__ = [
    "CameraRow",
    "parse_rows",
    "format_rows",
    "rows_from_path",
    "read_realestate10k",
    "write_realestate10k",
    "read_megasam_npz",
    "read_argus_motion",
    "write_argus_motion",
]
