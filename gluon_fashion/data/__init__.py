"""Data over the converter's COCO-style JSON: its reader, the instance (Mask R-CNN) and segmentation (DeepLab)
datasets, and the resumable batch samplers both trainers draw from."""
