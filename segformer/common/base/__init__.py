"""The base layer: error types, optional dependencies, size syntax, memory limits, atomic writes, untrusted JSON, the
allocator and random-state helpers. Imports nothing else from ``segformer``."""
