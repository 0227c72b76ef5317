"""Serving predictions over HTTP (``tools/serve.py``): the queued model (``service``) and the web layer (``app``).

The model runs through ``gluon_fashion.predict``, the project's one prediction path; ``static/`` holds the
web page (HTML, JavaScript and CSS, no external resource).
"""
from .service import (DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, DEFAULT_QUEUE_SIZE, DEFAULT_SERVE_SCORE_THRESHOLD,
                      BadInput, PredictionService, QueueFull, ServiceStopped, Upload, check_upload)

__all__ = ["BadInput", "DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "DEFAULT_QUEUE_SIZE",
           "DEFAULT_SERVE_SCORE_THRESHOLD", "PredictionService", "QueueFull", "ServiceStopped", "Upload",
           "check_upload"]
