"""prepare_comfyui.py's patches on synthetic copies of the two installed files (no ComfyUI needed)."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

HOST_FREE = True  # runs without ComfyUI

_spec = importlib.util.spec_from_file_location("prepare_comfyui", pathlib.Path(__file__).with_name("prepare_comfyui.py"))
prepare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prepare)

TV_TEXT = '''import functools

import torch
import torch._custom_ops
import torch.library

# Ensure that torch.ops.torchvision is visible
import torchvision.extension  # noqa: F401


@torch.library.register_fake("torchvision::nms")
def meta_nms(dets, scores, iou_threshold):
    return dets


@torch.library.register_fake("torchvision::qnms")
def meta_qnms(dets, scores, iou_threshold):
    return dets
'''

TA_TEXT = '''import warnings

import torch


def _load_lib(lib: str) -> bool:
    paths = list(_LIB_DIR.glob(f"{lib}*{suffix}"))
    if not paths:
        return False
    torch.ops.load_library(paths[0])
    return True
'''


@pytest.fixture()
def site(tmp_path):
    (tmp_path / prepare.TV_FILE).parent.mkdir(parents=True)
    (tmp_path / prepare.TA_FILE).parent.mkdir(parents=True)
    (tmp_path / prepare.TV_FILE).write_text(TV_TEXT)
    (tmp_path / prepare.TA_FILE).write_text(TA_TEXT)
    return tmp_path


def test_patches_are_applied_once_and_compile(site):
    assert prepare.patch_torchvision(site) == "patched"
    assert prepare.patch_torchaudio(site) == "patched"
    tv, ta = (site / prepare.TV_FILE).read_text(), (site / prepare.TA_FILE).read_text()
    assert "@torch.library.register_fake(" not in tv and tv.count("@_pano360_register_fake_if_ops(") == 2
    assert "except OSError" in ta
    compile(tv, "tv", "exec"), compile(ta, "ta", "exec")
    assert prepare.patch_torchvision(site) == "already patched"
    assert prepare.patch_torchaudio(site) == "already patched"
    assert (site / prepare.TV_FILE).read_text() == tv and (site / prepare.TA_FILE).read_text() == ta


def test_guarded_torchaudio_loader_returns_false_on_oserror(site):
    prepare.patch_torchaudio(site)

    class Ops:
        @staticmethod
        def load_library(path):
            raise OSError("libc10_cuda.so: cannot open shared object file")

    class Glob:
        def glob(self, pattern):
            return ["/x/_torchaudio.abi3.so"]

    namespace = {}
    exec((site / prepare.TA_FILE).read_text(), namespace)
    namespace.update(torch=type("T", (), {"ops": Ops}), _LIB_DIR=Glob(), suffix=".so")
    with pytest.warns(UserWarning, match="not loaded"):
        assert namespace["_load_lib"]("_torchaudio") is False


def test_unknown_file_is_refused(site):
    (site / prepare.TA_FILE).write_text("def _load_lib(lib):\n    return True\n")
    with pytest.raises(prepare.PatchError, match="unknown torchaudio version"):
        prepare.patch_torchaudio(site)
