"""Guarded fuzzing over the library's user-facing surfaces: seeded generators, one worker process with a memory
cap and a per-case timeout, every outcome classified (``tests/fuzzing/run.py`` runs it; see README "Testing")."""
