"""Write ``lookbeyond_pose_keys.json``: the key/shape tables of Look Beyond's camera-pose modules.

Not run by the tests.  Builds, on the ``meta`` device (no memory, no weights), exactly what
``YiGuYT/LookBeyond`` (commit ea00c7b) ``VideoDiffusion/videogen.py`` ``main`` builds and loads:

* ``pose_encoder``: ``camctrl.pose_adaptor.CameraPoseEncoder()`` with its defaults, which are
  ``camctrl/config.yaml``'s ``pose_encoder_kwargs`` (``model_2_state_dict.pth``);
* ``channel_reducer``: ``nn.Conv2d(320, 4, kernel_size=1)`` (``model_1_state_dict.pth``);
* ``linear_fuser``: ``nn.Linear(4, 4)`` (``model_3_state_dict.pth``).

``models/lookbeyond_pose.py`` is tested against these tables (same keys, same shapes).

Usage (the official code needs the diffusers it pins, 0.27.0; see make_lookbeyond_inbetween_golden.py)::

    PYTHONPATH=/tmp/old python tests/data/make_lookbeyond_pose_keys.py /path/to/LookBeyond
"""

from __future__ import annotations

import json
import pathlib
import sys

import torch

OUT = pathlib.Path(__file__).resolve().with_name("lookbeyond_pose_keys.json")


def main(root: str) -> None:
    sys.path.insert(0, str(pathlib.Path(root) / "VideoDiffusion"))
    from camctrl.pose_adaptor import CameraPoseEncoder

    with torch.device("meta"):
        modules = {"pose_encoder": CameraPoseEncoder(), "channel_reducer": torch.nn.Conv2d(320, 4, kernel_size=1),
                   "linear_fuser": torch.nn.Linear(4, 4)}
    tables = {name: {k: list(v.shape) for k, v in m.state_dict().items()} for name, m in modules.items()}
    tables["source"] = "YiGuYT/LookBeyond@ea00c7b VideoDiffusion/videogen.py main(), camctrl/pose_adaptor.py"
    OUT.write_text(json.dumps(tables, indent=1, sort_keys=True) + "\n")
    sys.stderr.write(f"wrote {OUT}\n")


if __name__ == "__main__":
    main(sys.argv[1])
