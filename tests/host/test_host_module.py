"""nodes/_host.py against the real ComfyUI API: progress, interrupt, model folders, loading."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture()
def host(comfy_in_process):
    from pano360.nodes import _host

    return _host


@pytest.fixture()
def progress_events(comfy_in_process):
    """Capture what ComfyUI's ProgressBar sends to the server hook."""
    utils = comfy_in_process.utils
    events = []
    previous = utils.PROGRESS_BAR_HOOK
    utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: events.append((value, total, node_id)))
    try:
        yield events
    finally:
        utils.set_progress_bar_global_hook(previous)


def test_progress_callback_drives_comfy_progress_bar(host, progress_events):
    """What every ComfyUI version sends: the first and the final step, in order, for the
    node; 0.33's ProgressBar throttles the steps in between (PROGRESS_THROTTLE_*)."""
    callback = host.progress_callback(4, node_id="7")
    for done in range(1, 5):
        callback(done, 4)
    assert progress_events[0] == (1, 4, "7") and progress_events[-1] == (4, 4, "7")
    values = [value for value, _, _ in progress_events]
    assert values == sorted(set(values)) and set(values) <= {1, 2, 3, 4}
    assert {(total, node) for _, total, node in progress_events} == {(4, "7")}


def test_progress_callback_reports_every_step_without_throttling(host, progress_events, comfy_in_process,
                                                                monkeypatch):
    """With ComfyUI's throttle off (0.33 has one; 0.3.64 sends every update) each step arrives."""
    utils = comfy_in_process.utils
    for name in ("PROGRESS_THROTTLE_MIN_INTERVAL", "PROGRESS_THROTTLE_MIN_PERCENT"):
        if hasattr(utils, name):
            monkeypatch.setattr(utils, name, 0)
    callback = host.progress_callback(4, node_id="7")
    for done in range(1, 5):
        callback(done, 4)
    assert progress_events == [(1, 4, "7"), (2, 4, "7"), (3, 4, "7"), (4, 4, "7")]


def test_progress_callback_honours_interrupt_between_steps(host, progress_events, comfy_in_process):
    mm = comfy_in_process.model_management
    callback = host.progress_callback(3)
    callback(1, 3)
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(host.InterruptProcessingException):
            callback(2, 3)
    finally:
        mm.interrupt_current_processing(False)
    assert progress_events == [(1, 3, None)]  # the interrupted step reports nothing
    assert not mm.processing_interrupted()  # ComfyUI clears the flag when it raises


def test_register_model_folder_lists_model_files(host, comfy_in_process, tmp_path):
    fp = comfy_in_process.folder_paths
    name = "pano360_test_folder"
    host.register_model_folder(name)
    try:
        paths, extensions = fp.folder_names_and_paths[name]
        folder = paths[0]
        assert folder == f"{fp.models_dir}/{name}"
        assert ".safetensors" in extensions
        import os

        os.makedirs(folder, exist_ok=True)
        torch.save({"w": torch.ones(2)}, os.path.join(folder, "a.pt"))
        open(os.path.join(folder, "notes.txt"), "w").close()
        assert host.model_file_list(name) == ["a.pt"]
        assert host.model_file_path(name, "a.pt") == os.path.join(folder, "a.pt")
        with pytest.raises(FileNotFoundError):
            host.model_file_path(name, "missing.pt")
        assert torch.equal(host.load_torch_file(os.path.join(folder, "a.pt"))["w"], torch.ones(2))
    finally:
        fp.folder_names_and_paths.pop(name, None)


def test_register_model_folder_keeps_paths_from_extra_model_paths(host, comfy_in_process, tmp_path):
    """A folder already declared by extra_model_paths.yaml (loaded before custom nodes, with
    no extension filter) keeps its path and gets the default folder and the model extensions."""
    fp = comfy_in_process.folder_paths
    name = "pano360_test_extra"
    fp.add_model_folder_path(name, str(tmp_path))
    try:
        host.register_model_folder(name)
        host.register_model_folder(name)  # idempotent
        paths, extensions = fp.folder_names_and_paths[name]
        assert paths == [str(tmp_path), f"{fp.models_dir}/{name}"]
        assert ".safetensors" in extensions
        (tmp_path / "b.safetensors").write_bytes(b"")
        (tmp_path / "readme.md").write_text("x")
        assert host.model_file_list(name) == ["b.safetensors"]
    finally:
        fp.folder_names_and_paths.pop(name, None)


def test_load_torch_file_safetensors_and_weights_only(host, tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.arange(3.0)}, str(tmp_path / "m.safetensors"))
    assert torch.equal(host.load_torch_file(str(tmp_path / "m.safetensors"))["x"], torch.arange(3.0))

    class Evil:
        def __reduce__(self):
            return (print, ("pickle code ran",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception):
        host.load_torch_file(str(tmp_path / "evil.pt"))  # weights_only refuses arbitrary objects


def test_directories_and_save_path_follow_comfy(host, comfy_in_process):
    assert host.output_directory() == str(comfy_in_process.base / "output")
    folder, filename, counter, subfolder, prefix = host.save_image_path("pano360/x", host.output_directory(), 8, 4)
    assert folder.startswith(host.output_directory()) and subfolder == "pano360" and filename == "x" and counter == 1
    assert host.torch_device().type == "cpu"


def test_run_node_calls_a_v3_node_like_the_executor(comfy_in_process):
    """The fixture's run_node on a stock V3 node: hidden inputs set, NodeOutput returned."""
    from comfy_extras.nodes_morphology import ImageRGBToYUV

    image = torch.zeros(1, 2, 2, 3)
    image[..., 0] = 1.0  # pure red
    out = comfy_in_process.run_node(ImageRGBToYUV, image=image)
    assert isinstance(out, comfy_in_process.io.NodeOutput)
    y = out.result[0]
    assert y.shape == image.shape
    assert torch.allclose(y, torch.full_like(y, 0.299), atol=1e-3)  # BT.601 luma of red
