"""Serve a checkpoint over HTTP: a web page to drop photos on, and a JSON/PNG prediction API.

    python tools/serve.py --weights RUN_best.params [--host 127.0.0.1] [--port 8080] [--gpus 0]
    # then open http://127.0.0.1:8080/ , or:
    curl -F image=@photo.jpg http://127.0.0.1:8080/predict
    curl --data-binary @photo.jpg 'http://127.0.0.1:8080/predict?format=png' -o overlay.png

Mask R-CNN and segmentation (FCN/PSP/DeepLab) checkpoints alike, predicted through gluon_fashion/predict.py
exactly as tools/predict.py does. Endpoints: POST /predict, GET / (the page), GET /healthz, GET /model.
Requests wait in a bounded queue (--queue-size; a full queue answers 503 with Retry-After); requests that
arrive together are predicted together, one per device (--gpus 0,1). Ctrl-C or SIGTERM stops it cleanly.
The default host is 127.0.0.1 (this machine only); --host 0.0.0.0 opens it to the network (no authentication).
"""
from __future__ import annotations

import argparse
import logging
import sys

from gluon_fashion.engine import parse_gpus
from gluon_fashion.errors import UserError, cli_entry
from gluon_fashion.models.mask_rcnn import add_test_budget_flags, test_budgets_from
from gluon_fashion.predict import load_model
from gluon_fashion.serving import (DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, DEFAULT_QUEUE_SIZE,
                                   DEFAULT_SERVE_SCORE_THRESHOLD, PredictionService)
from gluon_fashion.serving.app import serve


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="checkpoint .params (its .json must lie beside it)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine)")
    p.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    p.add_argument("--gpus", default="", help="GPU ids such as 0 or 0,1 (default: empty = CPU)")
    p.add_argument("--score-threshold", type=float, default=DEFAULT_SERVE_SCORE_THRESHOLD,
                   help="Mask R-CNN: lowest score returned (default: %(default)s; the page filters above it)")
    p.add_argument("--mask-threshold", type=float, default=0.5, help="Mask R-CNN: mask probability cut-off")
    p.add_argument("--max-detections", type=int, default=100, help="Mask R-CNN: per image (default: %(default)s)")
    add_test_budget_flags(p)
    p.add_argument("--queue-size", type=int, default=DEFAULT_QUEUE_SIZE,
                   help="requests that may wait; more get 503 (default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=None,
                   help="requests predicted together (default: one per device for Mask R-CNN, 1 for segmentation)")
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="largest upload (default: %(default)s)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="largest image in pixels (default: %(default)s)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p.parse_args(argv)


@cli_entry
def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(levelname)s: %(message)s")
    for flag, value in (("--queue-size", args.queue_size), ("--max-bytes", args.max_bytes),
                        ("--max-pixels", args.max_pixels), ("--max-batch", args.max_batch or 1)):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must lie in 1..65535, got {args.port}")
    model = load_model(args.weights, parse_gpus(args.gpus), test_budgets=test_budgets_from(args))
    service = PredictionService(model, queue_size=args.queue_size, max_batch=args.max_batch,
                                score_threshold=args.score_threshold, mask_threshold=args.mask_threshold,
                                max_detections=args.max_detections)
    print(f"serving {model.task} checkpoint {args.weights} on {', '.join(map(str, model.contexts))}: "
          f"open http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
    try:
        serve(service, args.host, args.port, args.max_bytes, args.max_pixels, args.log_level)
    finally:
        service.close()
    print("server stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
