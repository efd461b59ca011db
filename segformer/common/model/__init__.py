"""The model layer: config, variants, presets, Hub names, THE canonical weight table, outputs, decode-head
folding, loss rules, FLOPs. Imports only ``base``."""
