"""Datasets as sample records: MPII, COCO, unlabeled folders, synthetic data; image decoding and person crops.

Import the submodules directly (``pipeline.data.mpii``, ``pipeline.data.coco``, ``pipeline.data.folders``,
``pipeline.data.images``, ``pipeline.data.crops``, ``pipeline.data.sources``, ``pipeline.data.synthetic``).
"""
