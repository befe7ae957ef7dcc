"""The main job (`python -m pano360 demo`) also writes the 360° files players recognise."""

import argparse
import re
import subprocess

import numpy as np
from PIL import Image

from pano360.app import demo
from pano360.media.gpano import read_gpano
from pano360.media.spherical_mp4 import read_spherical


def test_demo_writes_tagged_360_image_and_video(tmp_path):
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    out = tmp_path / "demo"
    assert demo.run(parser.parse_args(["--out", str(out), "--size", "32", "--sweep-frames", "4"])) == 0
    fields = read_gpano(out / "panorama_360.png")
    assert (fields["ProjectionType"], fields["FullPanoWidthPixels"], fields["FullPanoHeightPixels"]) == (
        "equirectangular", 64, 32)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "panorama_360.png")),
                                  np.asarray(Image.open(out / "panorama.png")))
    (track,) = read_spherical(out / "panorama_360.mp4")
    assert track["v1"]["Spherical"] is True and track["v2"]["st3d"]["stereo_mode"] == 0
    import imageio_ffmpeg

    info = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(out / "panorama_360.mp4"),
                           "-f", "null", "-"], capture_output=True, text=True).stderr
    assert "Spherical Mapping: equirectangular" in info
    assert re.search(r"frame=\s*4\b", info), info[-500:]
    assert not list(out.glob(".*"))  # no temporary files left
