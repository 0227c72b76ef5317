"""gluon_fashion: garment segmentation on Kaggle iMaterialist (Fashion) 2019 with MXNet and GluonCV."""
__version__ = "0.1.0"
