"""One package per paper (``lookbeyond``, ``videopanda``, ``argus``, ``videofrom3d``,
``diffpano``); each stage is a function of plain tensors and callables.  Shared machinery
lives in ``sampling/``, ``cameras/``, ``media/`` and ``projection/`` (docs/layout.md)."""
