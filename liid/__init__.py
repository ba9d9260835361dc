"""LIID toolkit: image-level labels to instance segmentation training data."""

__version__ = "0.1.0"
