"""The pack's import surface: nothing heavy, nothing from ComfyUI at import time."""

import subprocess
import sys

from conftest import ROOT


def test_root_import_does_not_import_comfyui_or_torch():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('pano360', r'{ROOT / '__init__.py'}', "
        f"submodule_search_locations=[r'{ROOT}'])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['pano360'] = m; spec.loader.exec_module(m)\n"
        "assert callable(m.comfy_entrypoint)\n"
        "bad = [k for k in sys.modules if k.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths', 'torch')]\n"
        "print(bad); raise SystemExit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_requirements_never_pin_torch():
    names = []
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.append(line.split(">")[0].split("=")[0].split("<")[0].strip().lower())
    assert names, "requirements.txt is empty"
    assert not {"torch", "torchvision", "torchaudio"} & set(names)
