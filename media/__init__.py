"""Files: the one atomic writer, image conversion, MP4 writing, spherical MP4 metadata and
GPano XMP.  Host-free (never imports ComfyUI)."""
