#!/usr/bin/env python
"""Load figures of tools/serve.py: N concurrent clients on 127.0.0.1, a fixed number of requests.

    python benchmarks/bench_serve.py [--weights CKPT] [--clients 4] [--requests 60] [--rounds 3]

Starts tools/serve.py on a free port of 127.0.0.1 and, in interleaved rounds, (a) predicts the request images
in this process with predict.py's ``predict_images`` (the reference: images/s of the library with no server
around it) and (b) sends the same images to the server from ``--clients`` threads, each with its own HTTP
connection (multipart uploads, JSON answers), until ``--requests`` are answered. Prints per round and as medians:
requests/s, latency p50/p95/p99 (from send to the whole answer read), errors (any answer but 200: must be 0),
and the ratio of the server's requests/s to the reference's images/s (the cost of serving).

Without --weights a random Mask R-CNN checkpoint with the convergence benchmark's network and scale
(ResNet-18 C4, short side 256, long side at most 384, the 13 main apparel classes) is written under
benchmarks/_work/serve/: the work per image is the network's and the mask pasting's, not the weights'; a random
network keeps more low-scoring detections, each pasted and encoded, so this is on the heavy side. The images are
generated sample photos (benchmarks/_work/serve/sample/test).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from statistics import median

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
WORK = HERE / "_work" / "serve"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}"


def sample_images(count: int) -> list:
    from gluon_fashion.synthetic import make_sample_dataset

    root = WORK / "sample"
    if not (root / "test").is_dir() or len(list((root / "test").glob("*.jpg"))) < count:
        make_sample_dataset(root, num_train=1, num_test=count, seed=0, overwrite=True, progress=False)
    return sorted((root / "test").glob("*.jpg"))[:count]


def random_checkpoint() -> str:
    import mxnet as mx

    from gluon_fashion.engine.checkpoint import CheckpointManager
    from gluon_fashion.labels import parse_class_set
    from gluon_fashion.models.mask_rcnn import build_mask_rcnn, checkpoint_meta

    path = WORK / "random_c4_resnet18_best.params"
    if path.is_file():
        return str(path)
    classes = list(parse_class_set("main").category_ids)
    mx.random.seed(0)
    model = "mask_rcnn_resnet18_v1b_coco"
    net = build_mask_rcnn(model, classes, pretrained=False, rpn_test_pre_nms=600, rpn_test_post_nms=100)
    net(mx.nd.zeros((1, 3, 256, 256)))
    manager = CheckpointManager(str(WORK / "random_c4_resnet18"), checkpoint_meta(model, classes, 256, 384, net.limits),
                                metric_name="segm_mAP")
    manager.update_best(net, epoch=0, iteration=0, metric=0.0)
    return manager.best_path


def start_server(weights: str, queue_size: int) -> subprocess.Popen:
    from gluon_fashion.serving.process import start_server_process

    try:
        return start_server_process(weights, None, "--queue-size", str(queue_size), "--log-level", "warning",
                                    timeout_s=180, capture_output=False)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None


def reference_round(model, paths: list) -> float:
    """images/s of predict_images over ``paths`` (answers on the image grid, as the server gives them)."""
    from gluon_fashion.predict import ImageReader, predict_images
    from gluon_fashion.serving import DEFAULT_SERVE_SCORE_THRESHOLD

    started = time.perf_counter()
    for pred in predict_images(model, ImageReader(paths), DEFAULT_SERVE_SCORE_THRESHOLD, progress=False):
        pred.instances  # noqa: B018 - masks pasted and encoded, as the server does
    return len(paths) / (time.perf_counter() - started)


def server_round(port: int, payloads: list, clients: int) -> dict:
    import requests

    url = f"http://127.0.0.1:{port}/predict"
    latencies, errors, lock = [], [], threading.Lock()
    next_index = iter(range(len(payloads)))

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                name, data = payloads[index]
                sent = time.perf_counter()
                try:
                    answer = session.post(url, files={"image": (name, data, "image/jpeg")}, timeout=300)
                    ok = answer.status_code == 200 and "instances" in answer.json()
                    problem = None if ok else f"{answer.status_code} {answer.text[:200]}"
                except requests.RequestException as exc:
                    problem = repr(exc)
                with lock:
                    latencies.append(time.perf_counter() - sent)
                    if problem:
                        errors.append(problem)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"rps": len(payloads) / wall, "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99)), "errors": len(errors), "first_error": errors[0] if errors else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="checkpoint to serve (default: a random C4 ResNet-18)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=60, help="requests per round (default: %(default)s)")
    parser.add_argument("--images", type=int, default=20, help="distinct photos, cycled (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: %(default)s)")
    args = parser.parse_args()

    from gluon_fashion.predict import load_model

    WORK.mkdir(parents=True, exist_ok=True)
    weights = args.weights or random_checkpoint()
    photos = sample_images(args.images)
    order = [photos[i % len(photos)] for i in range(args.requests)]
    payloads = [(p.name, p.read_bytes()) for p in order]
    model = load_model(weights)
    # The queue holds every client's request: this measures throughput, not refusals.
    server = start_server(weights, queue_size=max(16, args.clients))
    port = server.port
    try:
        server_round(port, payloads[: min(4, len(payloads))], 2)  # warm-up: first calls compile and allocate
        reference_round(model, order[:2])
        rows = []
        for index in range(args.rounds):
            ref = reference_round(model, order)
            served = server_round(port, payloads, args.clients)
            served["reference_ips"], served["ratio"] = ref, served["rps"] / ref
            rows.append(served)
            print(f"round {index + 1}: predict.py {ref:.2f} img/s | server {served['rps']:.2f} req/s "
                  f"(ratio {served['ratio']:.2f}), p50 {served['p50']:.0f} ms, p95 {served['p95']:.0f} ms, "
                  f"p99 {served['p99']:.0f} ms, errors {served['errors']}", flush=True)
            if served["first_error"]:
                print(f"  first error: {served['first_error']}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    summary = {key: median(r[key] for r in rows) for key in ("reference_ips", "rps", "ratio", "p50", "p95", "p99")}
    summary["errors"] = sum(r["errors"] for r in rows)
    print(f"median of {args.rounds} rounds, {args.clients} clients x {args.requests} requests "
          f"({len(photos)} photos, {model.task} {model.meta.get('model')}, short {model.scale.get('short')}): "
          f"predict.py {summary['reference_ips']:.2f} img/s, server {summary['rps']:.2f} req/s, ratio "
          f"{summary['ratio']:.2f}; latency p50 {summary['p50']:.0f} / p95 {summary['p95']:.0f} / p99 "
          f"{summary['p99']:.0f} ms; errors {summary['errors']}; server exit code {server.returncode}; {machine()}")
    print(json.dumps(summary))
    return 0 if summary["errors"] == 0 and server.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
