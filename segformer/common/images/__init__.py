"""The image layer: decoding, ``SegformerImageProcessor``, post-processing, resize, transforms, label sets,
palettes, overlays, the sample photo. Imports ``base`` and ``model``."""
