"""gluon_fashion: garment segmentation on Kaggle iMaterialist (Fashion) 2019 with MXNet and GluonCV."""
from .cpu_threads import set_default_omp_threads

set_default_omp_threads()  # before any submodule imports mxnet

__version__ = "0.1.0"
