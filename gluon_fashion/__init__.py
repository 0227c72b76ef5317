"""gluon_fashion: garment segmentation on Kaggle iMaterialist (Fashion) 2019 with MXNet and GluonCV."""
from .cpu_threads import set_default_omp_threads
from .errors import print_uncaught_user_errors

set_default_omp_threads()  # before any submodule imports mxnet
print_uncaught_user_errors()
from . import compat  # noqa: E402,F401  numpy's removed aliases back and MXNet/GluonCV versions checked, before
#                       any submodule imports mxnet

__version__ = "0.1.0"
