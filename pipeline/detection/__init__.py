"""The detection stage: person boxes for unlabeled photo folders, from a torchvision detector."""
