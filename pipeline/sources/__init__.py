"""Sources: one package per kind (``amass/``, ``c3d/``, ...), each registering itself with
``pipeline.sources.registry``; ``pipeline.sources.base`` holds what they share (docs/adding_a_source.md)."""
