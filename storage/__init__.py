"""Storage, the bottom layer beside ``models``: files, not pose logic.

The teacher target cache (``storage.cache``), checkpoints, annotation and result files as arrays, JSON reading,
file hashes, atomic writes and locks. Nothing here imports ``pipeline``.
"""
