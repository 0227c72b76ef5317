"""tools/serve.py: every endpoint through Starlette's test client, every bad input, the queue, and a clean stop.

The checkpoints are small random networks (tests/_serve_helpers.py); answers are compared with
``predict.predict_images`` on the same file, the one prediction path the server must go through.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from starlette.testclient import TestClient

from _serve_helpers import (MASK_RCNN_CLASSES, SEG_CLASSES, free_port, photo_bytes, start_server, tiny_mask_rcnn,
                            tiny_segmentation)
from gluon_fashion.predict import ImageReader, load_model, predict_images
from gluon_fashion.rle import coco_to_mask
from gluon_fashion.serving import PredictionService, QueueFull, check_upload
from gluon_fashion.serving import service as service_module
from gluon_fashion.serving.app import create_app

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mask_rcnn_model(tmp_path_factory):
    return load_model(tiny_mask_rcnn(tmp_path_factory.mktemp("serve_mrcnn")))


@pytest.fixture(scope="module")
def client(mask_rcnn_model):
    service = PredictionService(mask_rcnn_model, queue_size=4, score_threshold=0.0)
    with TestClient(create_app(service, max_bytes=200_000, max_pixels=300 * 300)) as test_client:
        yield test_client
    assert service._stopping.is_set(), "the app's shutdown must stop the service"


def _reference(model, data: bytes, tmp_path: Path, threshold: float = 0.0):
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    (pred,) = list(predict_images(model, ImageReader([path]), score_threshold=threshold, progress=False))
    return pred


# ---------------------------------------------------------------------------------------------- answers
def test_predict_multipart_matches_predict_py(client, mask_rcnn_model, tmp_path):
    data = photo_bytes()
    response = client.post("/predict", files={"image": ("photo.jpg", data, "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] == {"name": "photo.jpg", "height": 120, "width": 160}
    assert body["checkpoint"]["task"] == "mask_rcnn"
    assert set(body["timing"]) >= {"queue_ms", "predict_ms", "total_ms", "batch_size"}
    reference = _reference(mask_rcnn_model, data, tmp_path)
    assert len(body["instances"]) == len(reference.instances) > 0
    for got, want in zip(body["instances"], reference.instances):
        assert got["category_id"] == want.category_id and got["category_id"] in MASK_RCNN_CLASSES
        assert got["score"] == pytest.approx(want.score, abs=1e-4)
        assert got["box"] == pytest.approx(list(want.box), abs=0.01)
        assert got["mask"] == want.rle
        assert coco_to_mask(got["mask"]).shape == (120, 160)
        assert got["name"]


def test_raw_body_and_png_and_threshold(client):
    data = photo_bytes(seed=3)
    multipart = client.post("/predict", files={"image": ("p.jpg", data)}).json()
    raw = client.post("/predict", content=data, headers={"content-type": "image/jpeg"})
    assert raw.status_code == 200
    assert [i["score"] for i in raw.json()["instances"]] == [i["score"] for i in multipart["instances"]]
    scores = sorted(i["score"] for i in multipart["instances"])
    cut = scores[len(scores) // 2]
    fewer = client.post(f"/predict?score_threshold={cut}", content=data).json()["instances"]
    assert 0 < len(fewer) < len(scores) and all(i["score"] >= cut for i in fewer)
    png = client.post("/predict?format=png", content=data)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    overlay = cv2.imdecode(np.frombuffer(png.content, np.uint8), cv2.IMREAD_COLOR)
    photo = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == photo.shape and np.abs(overlay.astype(int) - photo).mean() > 1  # masks were drawn


def test_healthz_model_page(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["task"] == "mask_rcnn" and health["queue_size"] == 4
    model = client.get("/model").json()
    assert model["task"] == "mask_rcnn" and model["architecture"] == "mask_rcnn_resnet18_v1b_coco"
    assert [c["id"] for c in model["classes"]] == MASK_RCNN_CLASSES
    assert all(len(c["color"]) == 3 for c in model["classes"]) and model["scale"] == {"short": 256, "max_size": 320}
    page = client.get("/")
    assert page.status_code == 200 and 'id="overlay"' in page.text and 'id="threshold"' in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing fetched from elsewhere: works offline
    for asset in ("app.js", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    missing = client.get("/nothing")
    assert missing.status_code == 404 and "error" in missing.json()


# ------------------------------------------------------------------------------------------- bad input
def _corrupt_png() -> bytes:
    """A PNG whose header is fine but whose pixel data is not deflate data."""
    data = bytearray(photo_bytes(ext=".png"))
    start = data.index(b"IDAT") + 4
    data[start:start + 40] = bytes(40)
    return bytes(data)


JPEG = photo_bytes()
BAD_BODIES = {
    "empty": (b"", 400, "zero bytes"),
    "not_an_image": (b"this is a text file, not a photo\n" * 3, 400, "not an image"),
    "truncated_jpeg": (JPEG[: len(JPEG) // 2], 400, "truncated JPEG"),
    "too_many_bytes": (JPEG + bytes(200_001), 413, "limit of 200000 bytes"),
    "too_many_pixels": (photo_bytes(400, 300), 413, "120000 pixels"),
    "cannot_decode": (_corrupt_png(), 400, "cannot be decoded"),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
@pytest.mark.parametrize("how", ["raw", "multipart"])
def test_bad_upload_is_a_4xx_json_error(client, name, how):
    data, status, words = BAD_BODIES[name]
    if how == "raw":
        response = client.post("/predict", content=data)
    else:
        response = client.post("/predict", files={"image": ("bad.jpg", data)})
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == name and words in body["error"]


def test_body_too_large_without_content_length(client):
    """A chunked upload has no Content-Length: it is cut off while read, not held in memory."""
    def chunks():
        for _ in range(50):
            yield bytes(10_000)

    response = client.post("/predict", content=chunks())
    assert response.status_code == 413 and response.json()["code"] == "too_many_bytes"


@pytest.mark.parametrize("kwargs,code,words", [
    ({"files": {"photo": ("p.jpg", JPEG)}}, "missing_field", "no field 'image'"),
    ({"data": {"image": "not a file"}, "files": {"other": ("x.txt", b"x")}}, "not_a_file", "not a file upload"),
    ({"data": {"image": "x"}}, "missing_field", "url-encoded"),
])
def test_missing_or_wrong_field(client, kwargs, code, words):
    response = client.post("/predict", **kwargs)
    assert response.status_code == 400 and response.json()["code"] == code and words in response.json()["error"]


@pytest.mark.parametrize("query,code", [("format=gif", "bad_format"), ("score_threshold=2", "bad_score_threshold"),
                                        ("score_threshold=abc", "bad_score_threshold")])
def test_bad_query(client, query, code):
    response = client.post(f"/predict?{query}", content=JPEG)
    assert response.status_code == 400 and response.json()["code"] == code


def test_wrong_method(client):
    response = client.get("/predict")
    assert response.status_code == 405 and "error" in response.json()


def test_check_upload_accepts_png_and_reads_size():
    upload = check_upload(photo_bytes(50, 70, ext=".png"))
    assert (upload.height, upload.width, upload.suffix) == (50, 70, ".png")


# ------------------------------------------------------------------------------------ queue and batching
class _Gate:
    """Holds the worker inside predict_images until released, to fill the queue on purpose."""

    def __init__(self, monkeypatch):
        self.entered, self.release = threading.Event(), threading.Event()
        real = service_module.predict_images

        def gated(*args, **kwargs):
            self.entered.set()
            assert self.release.wait(60)
            return real(*args, **kwargs)

        monkeypatch.setattr(service_module, "predict_images", gated)


def test_full_queue_answers_503_with_retry_after(mask_rcnn_model, monkeypatch):
    gate = _Gate(monkeypatch)
    service = PredictionService(mask_rcnn_model, queue_size=1, max_batch=1, score_threshold=0.0)
    with TestClient(create_app(service)) as client:
        upload = check_upload(JPEG)
        first = service.submit(upload)
        assert gate.entered.wait(30)  # the worker holds the first request
        second = service.submit(upload)  # waits in the only slot
        response = client.post("/predict", content=JPEG)
        assert response.status_code == 503 and response.json()["code"] == "queue_full"
        assert int(response.headers["Retry-After"]) >= 1
        with pytest.raises(QueueFull):
            service.submit(upload)
        gate.release.set()
        assert first.result(60).result["instances"] == second.result(60).result["instances"]
        assert client.post("/predict", content=JPEG).status_code == 200  # room again


def test_requests_that_arrive_together_are_batched(mask_rcnn_model, monkeypatch, tmp_path):
    gate = _Gate(monkeypatch)
    service = PredictionService(mask_rcnn_model, queue_size=8, max_batch=3, score_threshold=0.0)
    try:
        futures = [service.submit(check_upload(photo_bytes(seed=s))) for s in range(1)]
        assert gate.entered.wait(30)
        futures += [service.submit(check_upload(photo_bytes(seed=s))) for s in range(1, 5)]
        gate.release.set()
        answers = [f.result(120) for f in futures]
    finally:
        service.close()
    assert service.batches == [1, 3, 1]
    assert [a.result["timing"]["batch_size"] for a in answers] == [1, 3, 3, 3, 1]
    # An image predicted in a batch of 3 gets the answer it gets alone.
    alone = _reference(mask_rcnn_model, photo_bytes(seed=2), tmp_path).instances
    batched = answers[2].result["instances"]
    assert len(batched) == len(alone) > 0
    assert [i["mask"] for i in batched] == [inst.rle for inst in alone]
    assert [i["score"] for i in batched] == pytest.approx([inst.score for inst in alone], abs=1e-4)


def test_close_answers_queued_requests(mask_rcnn_model, monkeypatch):
    gate = _Gate(monkeypatch)
    service = PredictionService(mask_rcnn_model, queue_size=4, max_batch=1, score_threshold=0.0)
    first = service.submit(check_upload(JPEG))
    assert gate.entered.wait(30)
    queued = service.submit(check_upload(JPEG))
    closer = threading.Thread(target=service.close)
    closer.start()
    with pytest.raises(service_module.ServiceStopped):
        queued.result(30)
    gate.release.set()
    closer.join(60)
    assert first.result(0)  # the batch in hand was finished
    with pytest.raises(service_module.ServiceStopped):
        service.submit(check_upload(JPEG))


# ------------------------------------------------------------------------------------------ segmentation
def test_segmentation_checkpoint(tmp_path):
    model = load_model(tiny_segmentation(tmp_path))
    service = PredictionService(model)
    data = photo_bytes(seed=5)
    with TestClient(create_app(service)) as client:
        info = client.get("/model").json()
        assert info["task"] == "segmentation" and [c["id"] for c in info["classes"]] == list(SEG_CLASSES.category_ids)
        assert [entry["label"] for entry in info["labels"]] == list(range(SEG_CLASSES.num_classes))
        body = client.post("/predict", files={"image": ("p.jpg", data)}).json()
        png = client.post("/predict?format=png", content=data)
    reference = _reference(model, data, tmp_path)
    labels = body["labels"]
    assert [entry["label"] for entry in labels] == [k for k in np.unique(reference.label_map) if k > 0]
    for entry in labels:
        assert np.array_equal(coco_to_mask(entry["mask"]), reference.label_map == entry["label"])
        assert entry["pixels"] == int((reference.label_map == entry["label"]).sum())
    assert [i["score"] for i in body["instances"]] == [1.0] * len(labels)
    assert png.status_code == 200 and cv2.imdecode(np.frombuffer(png.content, np.uint8), 1).shape == (120, 160, 3)


# ------------------------------------------------------------------------------------ the command line
def test_serve_cli_stops_cleanly_on_sigterm(mask_rcnn_model):
    import requests

    port = free_port()
    proc = start_server(mask_rcnn_model.weights, port)
    try:
        answer = requests.post(f"http://127.0.0.1:{port}/predict", files={"image": ("p.jpg", JPEG)}, timeout=60)
        assert answer.status_code == 200 and answer.json()["instances"]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "server stopped" in out and "Traceback" not in out


def test_serve_cli_refuses_bad_flags(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "serve.py"), "--weights", str(tmp_path / "no.params")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no.params" in proc.stderr
