"""Training of the networks: the multi-label CAM classifier (``train-cls``) and the CAMs it gives for L_Att."""

from liid.training.cams import compute_cams
from liid.training.data import ClassificationData
from liid.training.train_cls import TrainClsConfig, train_classifier

__all__ = ["ClassificationData", "TrainClsConfig", "compute_cams", "train_classifier"]
