"""media/atomic.py: outputs get the modes a plain open()/mkdir gives (as ComfyUI's SaveImage
writes with PIL's open(path, "wb")), and an output never replaces another."""

import multiprocessing
import os
import stat

import numpy as np
import pytest

from pano360.media.atomic import atomic_folder, atomic_path, next_counter_name, next_free_folder, write_bytes
from pano360.media.images import save_png


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_files_and_folders_get_the_modes_plain_open_and_mkdir_give(tmp_path, umask_027):
    with open(tmp_path / "reference.png", "wb"):   # what ComfyUI's SaveImage gets (PIL opens the path)
        pass
    os.mkdir(tmp_path / "reference_dir")
    png = save_png(np.zeros((4, 8, 3), np.uint8), tmp_path / "pano_00001_.png")
    write_bytes(tmp_path / "manifest.json", b"{}", replace=True)
    with (folder := atomic_folder(tmp_path / "loop_00001")) as tmp:
        os.makedirs(os.path.join(tmp, "sub"))
        with open(os.path.join(tmp, "sub", "00000.png"), "wb"):
            pass
        save_png(np.zeros((4, 4, 3), np.uint8), os.path.join(tmp, "00001.png"))   # a mkstemp-based writer inside
    assert mode(tmp_path / "reference.png") == 0o640 and mode(tmp_path / "reference_dir") == 0o750
    for file in (png, tmp_path / "manifest.json", os.path.join(folder.path, "00001.png"),
                 os.path.join(folder.path, "sub", "00000.png")):
        assert mode(file) == mode(tmp_path / "reference.png"), file
    for sub in (folder.path, os.path.join(folder.path, "sub")):
        assert mode(sub) == mode(tmp_path / "reference_dir"), sub


def test_an_existing_output_is_never_replaced_and_next_free_takes_the_next_name(tmp_path):
    taken = tmp_path / "pano_00003_.png"
    taken.write_bytes(b"someone else's")
    image = np.full((4, 8, 3), 7, np.uint8)
    with pytest.raises(FileExistsError):
        save_png(image, taken)
    (tmp_path / "pano_00004_.png").write_bytes(b"and another")
    path = save_png(image, taken, next_free=next_counter_name)
    assert path == str(tmp_path / "pano_00005_.png")
    assert taken.read_bytes() == b"someone else's" and (tmp_path / "pano_00004_.png").read_bytes() == b"and another"
    assert sorted(os.listdir(tmp_path)) == ["pano_00003_.png", "pano_00004_.png", "pano_00005_.png"]  # no temporaries


def test_a_folder_never_replaces_even_an_empty_one(tmp_path):
    (tmp_path / "loop_00001").mkdir()
    with pytest.raises(FileExistsError):
        with atomic_folder(tmp_path / "loop_00001"):
            pass
    target = atomic_folder(tmp_path / "loop_00001", next_free=next_counter_name)
    with target as tmp:
        open(os.path.join(tmp, "pose.txt"), "w").close()
        os.mkdir(tmp_path / "loop_00002")   # taken meanwhile, still empty: rename() alone would replace it
    assert target.path == str(tmp_path / "loop_00003")
    assert os.listdir(tmp_path / "loop_00002") == [] and os.listdir(target.path) == ["pose.txt"]


def test_next_counter_name_follows_comfyui_numbering():
    assert next_counter_name("out/pano_00007_.png") == "out/pano_00008_.png"
    assert next_counter_name("loop_00001") == "loop_00002"
    assert next_counter_name("v_99999_.mp4") == "v_100000_.mp4"
    assert next_counter_name("plain.png") == "plain_00001.png"


def _save_many(folder: str, barrier, worker: int, count: int) -> None:
    """One 'server': ComfyUI-style numbering (one past the highest existing counter, computed
    from a listing, so two writers compute the same counter) and the atomic writer."""
    barrier.wait()
    for i in range(count):
        counters = [int(n.split("_")[1]) for n in os.listdir(folder) if n.startswith("pano_")]
        path = os.path.join(folder, f"pano_{max(counters, default=0) + 1:05}_.png")
        with atomic_path(path, ".png", next_free=next_counter_name) as tmp:
            with open(tmp, "wb") as f:
                f.write(f"{worker}:{i}".encode())


def test_writers_racing_for_the_same_names_keep_every_output(tmp_path):
    workers, count = 4, 25
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(workers)
    procs = [ctx.Process(target=_save_many, args=(str(tmp_path), barrier, w, count)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    contents = sorted(p.read_text() for p in tmp_path.iterdir())
    assert contents == sorted(f"{w}:{i}" for w in range(workers) for i in range(count))   # none replaced
    assert len(os.listdir(tmp_path)) == workers * count   # and no temporaries left


def test_next_free_folder_and_atomic_folder_agree(tmp_path):
    (tmp_path / "loop_00004").mkdir()
    assert os.path.basename(next_free_folder(str(tmp_path), "loop")) == "loop_00005"
