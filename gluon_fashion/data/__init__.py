"""Datasets over the converter's COCO-style JSON: instance (Mask R-CNN) and semantic (DeepLab)."""
