"""Argus (ICCV 2025): perspective video -> 360° video on an SVD UNet.

:mod:`.conditioning` (frames placed on the sphere, masks, CLIP tokens, time ids),
:mod:`.long_video` (overlapping windows conditioned on the previous window's frames).
Camera paths come from :mod:`...cameras`; the UNet key converter is ``models/svd_unet.py``.
"""
