"""Task trainers (Mask R-CNN, segmentation) built on gluon_fashion.engine; the entry scripts call them."""
