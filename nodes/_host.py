"""The one place where Pano360 talks to ComfyUI.

Every other module of ``nodes/`` imports ComfyUI's API from here, and ``projection``,
``models`` and ``pipelines`` never import ComfyUI at all.  Keeping the surface in one
small module makes the pack easy to port when ComfyUI's unstable ``comfy_api.latest``
moves, and lets tests see exactly what the pack relies on.

Targets ComfyUI 0.3.64 (``comfy_api.latest``).
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import comfy.model_management as _mm
import comfy.utils as _utils
import folder_paths as _folder_paths
from comfy_api.latest import ComfyExtension, io, ui

log = logging.getLogger("pano360")

__all__ = [
    "ComfyExtension",
    "io",
    "ui",
    "log",
    "InterruptProcessingException",
    "check_interrupt",
    "progress_callback",
    "register_model_folder",
    "model_file_list",
    "model_file_path",
    "load_torch_file",
    "output_directory",
    "temp_directory",
    "input_directory",
    "save_image_path",
    "torch_device",
    "intermediate_device",
    "offload_device",
    "load_models",
    "free_memory",
    "ModelPatcher",
]

InterruptProcessingException = _mm.InterruptProcessingException


def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel."""
    _mm.throw_exception_if_processing_interrupted()


def progress_callback(total: int, node_id: str | None = None) -> Callable[[int], None]:
    """A ``callback(step)`` for the pipelines: drives ComfyUI's progress bar to
    ``step + 1`` of ``total`` and honours an interrupt between steps."""
    bar = _utils.ProgressBar(total, node_id=node_id)

    def callback(step: int, preview=None) -> None:
        check_interrupt()
        bar.update_absolute(step + 1, total, preview)

    return callback


def register_model_folder(name: str) -> None:
    """Register ``models/<name>`` so loaders list its model files (and ``/models/<name>``
    serves them).  An entry that already exists (for example from
    ``extra_model_paths.yaml``, which ComfyUI loads before custom nodes) keeps its paths
    and gets the default folder appended.  Idempotent."""
    path = os.path.join(_folder_paths.models_dir, name)
    if name in _folder_paths.folder_names_and_paths:
        _folder_paths.add_model_folder_path(name, path)
        paths, extensions = _folder_paths.folder_names_and_paths[name]
        if not extensions:
            # add_model_folder_path (extra_model_paths.yaml) creates entries with no
            # extension filter, which would list every file; list model files only.
            _folder_paths.folder_names_and_paths[name] = (paths, set(_folder_paths.supported_pt_extensions))
    else:
        _folder_paths.folder_names_and_paths[name] = ([path], set(_folder_paths.supported_pt_extensions))
    _folder_paths.filename_list_cache.pop(name, None)  # a listing made before this change is stale


def model_file_list(name: str) -> list[str]:
    return _folder_paths.get_filename_list(name)


def model_file_path(name: str, filename: str) -> str:
    return _folder_paths.get_full_path_or_raise(name, filename)


def load_torch_file(path: str, device=None):
    """safetensors or a weights-only torch file, through ComfyUI's loader."""
    return _utils.load_torch_file(path, safe_load=True, device=device)


def output_directory() -> str:
    return _folder_paths.get_output_directory()


def temp_directory() -> str:
    return _folder_paths.get_temp_directory()


def input_directory() -> str:
    return _folder_paths.get_input_directory()


def save_image_path(prefix: str, directory: str, width: int = 0, height: int = 0):
    """ComfyUI's numbering of output files: (folder, filename, counter, subfolder, prefix)."""
    return _folder_paths.get_save_image_path(prefix, directory, width, height)


def torch_device():
    return _mm.get_torch_device()


def intermediate_device():
    return _mm.intermediate_device()


def offload_device():
    return _mm.unet_offload_device()


def load_models(patchers: list, memory_required: int = 0) -> None:
    """Let ComfyUI's memory manager place the given ModelPatchers on the device."""
    _mm.load_models_gpu(patchers, memory_required=memory_required)


def free_memory() -> None:
    _mm.soft_empty_cache()


def __getattr__(name: str):
    # ModelPatcher is imported lazily: comfy.model_patcher pulls in a lot.
    if name == "ModelPatcher":
        from comfy.model_patcher import ModelPatcher

        return ModelPatcher
    raise AttributeError(name)
