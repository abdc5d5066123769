"""Student training for Fast Pose Distillation.

Modules: ``config`` (typed YAML recipe), ``data`` (``DistillDataset``: one augmentation for image, GT and cached
teacher heatmaps), ``loss`` (``FPDLoss``), ``schedule`` (optimiser, step LR), ``state`` (resumable checkpoints),
``distributed`` (torchrun / DDP), ``sources`` (records, cache look-up and checks, validation), ``preflight`` (the
recipe's device and files, checked before any work), ``recipe`` (the resolved run) and ``loop`` (``train``).
Kept import-free so that ``fpd --help`` does not load torch.
"""
