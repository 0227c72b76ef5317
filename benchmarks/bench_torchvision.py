#!/usr/bin/env python
"""The project's Mask R-CNN against torchvision's, same architecture and settings, on CPU, in the same run.

    python benchmarks/bench_torchvision.py                        # about 2 minutes after the one-off install
    python benchmarks/bench_torchvision.py --profile              # then each side under its own profiler
    python benchmarks/bench_torchvision.py --rounds 3 --steps 2   # shorter

Torch is never a dependency of the project: the script installs ``torch`` and ``torchvision`` (``TORCH_PINS``) into
a virtual environment of its own (``--venv``, default ``benchmarks/_work/torch_venv``, about 5.5 GB: the registry
serves CUDA builds, whose ``nvidia-*`` libraries torch needs even to import on CPU) and runs the torch side there
as a persistent worker process (this same file with ``--worker``), spoken to in JSON lines over its stdin/stdout.
The images and ground truth go to it once in an ``.npz``; neither side loads data while timed.

The two networks: GluonCV's ``mask_rcnn_fpn_resnet50_v1b_coco`` as the project trains it (``MaskRCNNTrainer``
from random initialisation, ``--classes all``: 46 categories + background) and torchvision's
``maskrcnn_resnet50_fpn`` (random initialisation, ``num_classes=47``: every layer trained, BatchNorm with batch
statistics; the project's FPN backbone keeps GluonCV's fixed BatchNorm, see ``LR``). Both: short side 256 / max
384, RPN 300 / 100 proposals before / after NMS in training, 32 sampled RoIs per image, 1000 / 100 proposals and
100 detections at test time, batch 1, SGD (momentum 0.9, weight decay 1e-4, learning rate 0: see ``LR``), 2
threads. torchvision keeps ``pre_nms_top_n`` per FPN level, GluonCV over all levels together. The same photos (the small
generated sample) and the same ground truth (boxes, labels, masks as the project's loader makes them, random
flip included) feed both.

Training step: the project's ``MaskRCNNTrainer.step`` (forward, backward, SGD update, until MXNet is done);
torchvision's ``model(images, targets)``, ``backward``, ``optimizer.step``. The project computes the RPN anchor
targets in its data loader (GluonCV's design), so they are outside its timed step; torchvision matches anchors
inside its forward. Inference per image: the project's ``predict_instances`` (RGB in, masks pasted onto the
photo's grid as RLE out) with score threshold 0 against torchvision's ``model([image])`` in eval mode under
``torch.inference_mode`` (masks pasted onto the image grid), torchvision's box score threshold set to GluonCV's
0.0001 so that both compute masks for up to 100 detections of a randomly initialised net (with torchvision's
default 0.05 it would keep none, softmax scores being about 1/47).

Timing: after warm-up, ``--rounds`` interleaved pairs (project chunk, torchvision chunk) for training, then the
same for inference; each chunk runs ``--steps`` steps / images; the figures are medians over the rounds of the
seconds per step / image, and the ratios (project images/s over torchvision images/s) medians of the per-round
ratios. Targets (issue 19): inference >= 1.0x, training step >= 0.8x.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TORCH_PINS = ("torch==2.14.1", "torchvision==0.29.1")
THREADS = 2
SHORT, MAX_SIZE = 256, 384
BUDGETS = {"rpn_train_pre_nms": 300, "rpn_train_post_nms": 100, "rcnn_num_sample": 32,
           "rpn_test_pre_nms": 1000, "rpn_test_post_nms": 100, "rcnn_max_dets": 100}
#: Learning rate 0 on both sides: the project's FPN net from random initialisation diverges within a few steps
#: (loss ~1e14 by the second step: its backbone is a SymbolBlock whose BatchNorm keeps ``use_global_stats``, an
#: identity for fresh weights, which ``learn_batchnorm_statistics`` cannot reach), and a NaN stops its step.
#: Holding the weights fixed keeps every step's numbers alike; the SGD update does the same arithmetic for any rate.
LR, MOMENTUM, WD = 0.0, 0.9, 1e-4
#: GluonCV's ``valid_thresh`` of its per-class box NMS; torchvision's ``box_score_thresh`` is set to it.
SCORE_FLOOR = 1e-4
TARGET_INFERENCE, TARGET_TRAIN = 1.0, 0.8


# ------------------------------------------------------------------------------------ torch environment
def ensure_torch_venv(venv: Path, find_links: str | None) -> Path:
    """The torch virtual environment's python, creating the environment and installing ``TORCH_PINS`` once."""
    python = venv / "bin" / "python"
    marker = venv / (".installed-" + "-".join(p.replace("==", "_") for p in TORCH_PINS))
    if marker.is_file():
        return python
    print(f"installing {' '.join(TORCH_PINS)} into {venv} (once; several GB)", flush=True)
    command = [str(python), "-m", "pip", "install", "-q", *TORCH_PINS]
    if find_links:
        command += ["--find-links", find_links]
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(command, check=True)
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"error: could not install {' '.join(TORCH_PINS)} into {venv} (--venv): "
                         f"{' '.join(exc.cmd)} exited with {exc.returncode}") from None
    marker.write_text("\n".join(TORCH_PINS) + "\n", encoding="utf-8")
    return python


class TorchWorker:
    """The torch side: ``--worker`` in the torch venv, one JSON request per line in, one JSON reply per line out."""

    def __init__(self, python: Path, data: Path):
        env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), PYTHONNOUSERSITE="1")
        env.pop("PYTHONPATH", None)
        self.process = subprocess.Popen([str(python), str(Path(__file__).resolve()), "--worker", str(data)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"torch worker ended (exit status {self.process.wait()}); see its messages above")
        return json.loads(line)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.ask(cmd="quit")
            except (BrokenPipeError, RuntimeError):
                pass
            self.process.wait(timeout=60)


def worker_main(data_path: str) -> int:
    """The torch worker (runs under the torch venv; imports nothing of the project)."""
    import numpy as np
    import torch
    import torchvision
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    # The protocol gets its own copy of stdout; anything else printed (Python or C++) goes to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    arrays = np.load(data_path)
    count = int(arrays["count"])
    images = [torch.from_numpy(arrays[f"image{i}"]) for i in range(count)]  # 3 x h x w, float32 in [0, 1]
    targets = [{"boxes": torch.from_numpy(arrays[f"boxes{i}"]), "labels": torch.from_numpy(arrays[f"labels{i}"]),
                "masks": torch.from_numpy(arrays[f"masks{i}"])} for i in range(count)]
    test_images = [torch.from_numpy(arrays[f"test{i}"]).permute(2, 0, 1).float().div(255) for i in range(count)]
    model = maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=47, min_size=SHORT, max_size=MAX_SIZE,
        rpn_pre_nms_top_n_train=BUDGETS["rpn_train_pre_nms"], rpn_post_nms_top_n_train=BUDGETS["rpn_train_post_nms"],
        rpn_pre_nms_top_n_test=BUDGETS["rpn_test_pre_nms"], rpn_post_nms_top_n_test=BUDGETS["rpn_test_post_nms"],
        box_batch_size_per_image=BUDGETS["rcnn_num_sample"], box_detections_per_img=BUDGETS["rcnn_max_dets"],
        box_score_thresh=SCORE_FLOOR)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR, momentum=MOMENTUM,
                                weight_decay=WD)
    position = 0

    def run_one(cmd: str) -> None:  # one training step or one inference, for the profiler
        nonlocal position
        i = position % count
        position += 1
        if cmd == "train":
            model.train()
            loss = sum(model([images[i]], [targets[i]]).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        else:
            model.eval()
            with torch.inference_mode():
                model([test_images[i]])

    def reply(**values) -> None:
        out.write(json.dumps(values) + "\n")
        out.flush()

    for line in sys.stdin:
        request = json.loads(line)
        cmd = request["cmd"]
        if cmd == "info":
            reply(torch=torch.__version__, torchvision=torchvision.__version__, threads=torch.get_num_threads(),
                  interop_threads=torch.get_num_interop_threads())
        elif cmd in ("train", "infer") and request.get("profile"):
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(request["steps"]):
                    run_one(cmd)
            reply(table=prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
        elif cmd == "train":
            model.train()
            seconds, losses = [], []
            for _ in range(request["steps"]):
                i = position % count
                position += 1
                started = time.perf_counter()
                loss_dict = model([images[i]], [targets[i]])
                loss = sum(loss_dict.values())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                seconds.append(time.perf_counter() - started)
            reply(seconds=seconds, losses=losses)
        elif cmd == "infer":
            model.eval()
            seconds, detections = [], []
            with torch.inference_mode():
                for k in range(request["images"]):
                    started = time.perf_counter()
                    result = model([test_images[k % count]])[0]
                    seconds.append(time.perf_counter() - started)
                    detections.append(int(result["boxes"].shape[0]))
            reply(seconds=seconds, detections=detections)
        elif cmd == "quit":
            reply(bye=True)
            break
    return 0


# ----------------------------------------------------------------------------------------- project side
class ProjectSide:
    """The project's Mask R-CNN: ``MaskRCNNTrainer`` built as ``train_mask_rcnn.py`` would build it, with the
    training batches taken from its own loader once and held in memory."""

    def __init__(self, dataset_root: Path, out: Path, count: int):
        import mxnet as mx
        import numpy as np
        from gluon_fashion.trainers.mask_rcnn import MaskRCNNTrainer, build_parser

        self.mx, self.np = mx, np
        flags = ["--dataset-root", str(dataset_root), "--save-prefix", f"{out}/", "--network", "resnet50_v1b",
                 "--use-fpn", "--no-pretrained", "--classes", "all", "--short", str(SHORT), "--max-size",
                 str(MAX_SIZE), "--epochs", "1", "--lr", "0.00125", "--momentum", str(MOMENTUM), "--wd", str(WD),
                 "--lr-warmup", "0", "-j", "0", "--batch-size", "1"]
        for key, value in BUDGETS.items():
            flags += ["--" + key.replace("_", "-"), str(value)]
        self.run = MaskRCNNTrainer(build_parser().parse_args(flags))
        self.run.hybridize()
        loader = iter(self.run.train_loader)
        self.batches = [next(loader) for _ in range(count)]
        self.position = 0
        self.iteration = 0

    def classes(self) -> int:
        return len(self.run.net.classes)

    def torch_data(self) -> dict:
        """The held batches as torch's inputs: images in [0, 1] (the loader's normalisation undone), boxes,
        labels shifted by one (torchvision's 0 is background), masks; and uint8 RGB images for inference."""
        np = self.np
        mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
        std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
        arrays = {"count": np.array(len(self.batches))}
        for i, batch in enumerate(self.batches):
            data, label, masks = (element[0] if isinstance(element, (list, tuple)) else element
                                  for element in batch[:3])
            image = data.asnumpy()[0] * std + mean
            label = label.asnumpy()[0]
            keep = label[:, 4] >= 0
            arrays[f"image{i}"] = image.astype(np.float32)
            arrays[f"boxes{i}"] = label[keep, :4].astype(np.float32)
            arrays[f"labels{i}"] = (label[keep, 4] + 1).astype(np.int64)
            arrays[f"masks{i}"] = masks.asnumpy()[0][keep].astype(np.uint8)
            arrays[f"test{i}"] = np.clip(np.rint(image.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
        self.test_images = [arrays[f"test{i}"] for i in range(len(self.batches))]
        return arrays

    def train(self, steps: int):
        mx = self.mx
        seconds, losses = [], []
        for _ in range(steps):
            batch = self.batches[self.position % len(self.batches)]
            self.position += 1
            started = time.perf_counter()
            values = self.run.step(batch, self.iteration, LR)  # the rate of each step (the flag's must be > 0)
            mx.nd.waitall()  # the update runs asynchronously: the step ends when MXNet is done
            seconds.append(time.perf_counter() - started)
            losses.append(values["loss"])
            self.iteration += 1
        return seconds, losses

    def start_inference(self) -> None:
        self.run.hybridize()  # GluonCV builds another graph for inference

    def infer(self, images: int):
        from gluon_fashion.models.mask_rcnn import predict_instances
        seconds, detections = [], []
        for k in range(images):
            photo = self.test_images[k % len(self.test_images)]
            started = time.perf_counter()
            found = predict_instances(self.run.net, photo, SHORT, MAX_SIZE, ctx=self.mx.cpu(), score_threshold=0.0,
                                      max_detections=BUDGETS["rcnn_max_dets"])
            seconds.append(time.perf_counter() - started)
            detections.append(len(found))
        return seconds, detections

    def profile(self, phase: str, count: int, filename: Path) -> None:
        """MXNet's operator profile of ``count`` training steps or inferences, the ten costliest operators printed
        (``profile_mask_rcnn``'s table)."""
        from profile_mask_rcnn import _print_top
        mx = self.mx
        mx.profiler.set_config(profile_symbolic=True, profile_imperative=True, profile_api=False,
                               aggregate_stats=True, filename=str(filename))
        mx.profiler.set_state("run")
        seconds = (self.train if phase == "train" else self.infer)(count)[0]
        mx.nd.waitall()
        mx.profiler.set_state("stop")
        _print_top(f"project {phase} under MXNet's profiler", mx.profiler.dumps(reset=True), statistics.mean(seconds),
                   "step" if phase == "train" else "image")

    def close(self) -> None:
        self.run.close()


# ----------------------------------------------------------------------------------------------- driver
def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def interleave(name: str, ours, theirs, rounds: int, unit: str):
    """``rounds`` pairs (ours, theirs); prints each round; returns (our median s, their median s, median ratio)."""
    our_means, their_means, ratios = [], [], []
    for r in range(rounds):
        mine, extra_mine = ours()
        other, extra_other = theirs()
        our_means.append(statistics.mean(mine))
        their_means.append(statistics.mean(other))
        ratios.append(their_means[-1] / our_means[-1])
        print(f"  {name} round {r + 1}: project {our_means[-1]:.3f} s/{unit} ({extra_mine}), torchvision "
              f"{their_means[-1]:.3f} s/{unit} ({extra_other}), ratio {ratios[-1]:.2f}", flush=True)
    return statistics.median(our_means), statistics.median(their_means), statistics.median(ratios)


def profile_both(ours: ProjectSide, worker: TorchWorker, phase: str, count: int, tmp: Path) -> None:
    """After the timed rounds (profilers slow what they watch): each side's costliest operators."""
    ours.profile(phase, count, tmp / f"{phase}_profile.json")
    print(f"\ntorchvision {phase} under torch.profiler ({count} x), by self CPU time:")
    print(worker.ask(cmd=phase, steps=count, profile=True)["table"], flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved (project, torchvision) pairs per phase")
    parser.add_argument("--steps", type=int, default=4, help="training steps and inference images per chunk")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps / images per side before each phase")
    parser.add_argument("--images", type=int, default=4, help="sample photos held in memory and cycled through")
    parser.add_argument("--venv", type=Path, default=HERE / "_work" / "torch_venv",
                        help="virtual environment for torch (created and filled on the first run)")
    parser.add_argument("--find-links", default=None,
                        help="extra pip --find-links for the torch install (a folder holding the wheels)")
    parser.add_argument("--profile", action="store_true",
                        help="after each phase's rounds, one more chunk per side under its framework's profiler")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args.worker)
    for flag in ("rounds", "steps", "images"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1")

    os.environ.setdefault("GLUON_FASHION_NO_PROGRESS", "1")
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    python = ensure_torch_venv(args.venv, args.find_links)
    import gluon_fashion  # noqa: F401  (sets OMP_NUM_THREADS before MXNet loads)
    import mxnet as mx
    from bench_mask_rcnn import converted_sample

    root = converted_sample("small", num_train=10, num_test=0, seed=5, val_num=1)
    with tempfile.TemporaryDirectory() as tmp:
        ours = ProjectSide(root, Path(tmp) / "run", args.images)
        data = Path(tmp) / "data.npz"
        import numpy as np
        np.savez(data, **ours.torch_data())
        worker = TorchWorker(python, data)
        try:
            info = worker.ask(cmd="info")
            sizes = sorted({tuple(img.shape[:2]) for img in ours.test_images})
            print(f"{cpu_model()}, {os.cpu_count()} CPUs; Python {platform.python_version()}; MXNet {mx.__version__} "
                  f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}), torch {info['torch']} / torchvision "
                  f"{info['torchvision']} (torch.set_num_threads({info['threads']}), {info['interop_threads']} "
                  f"inter-op threads)")
            print(f"project: {ours.run.model_name}, {ours.classes()} classes + background; torchvision: "
                  f"maskrcnn_resnet50_fpn, num_classes=47; random init; {len(ours.batches)} photos, input sizes "
                  f"{sizes}; budgets {BUDGETS}; batch 1; SGD lr {LR}; {args.rounds} rounds x {args.steps} per chunk",
                  flush=True)

            ours.train(args.warmup)
            worker.ask(cmd="train", steps=args.warmup)

            def our_train():
                seconds, losses = ours.train(args.steps)
                return seconds, f"loss {losses[-1]:.2f}"

            def their_train():
                reply = worker.ask(cmd="train", steps=args.steps)
                return reply["seconds"], f"loss {reply['losses'][-1]:.2f}"

            train = interleave("training", our_train, their_train, args.rounds, "step")
            if args.profile:
                profile_both(ours, worker, "train", args.steps, Path(tmp))

            ours.start_inference()
            ours.infer(args.warmup)
            worker.ask(cmd="infer", images=args.warmup)

            def our_infer():
                seconds, found = ours.infer(args.steps)
                return seconds, f"{statistics.mean(found):.0f} detections/image"

            def their_infer():
                reply = worker.ask(cmd="infer", images=args.steps)
                return reply["seconds"], f"{statistics.mean(reply['detections']):.0f} detections/image"

            infer = interleave("inference", our_infer, their_infer, args.rounds, "image")
            if args.profile:
                profile_both(ours, worker, "infer", args.steps, Path(tmp))
        finally:
            worker.close()
            ours.close()

    print(f"\n{'phase':22s} {'project s':>10s} {'torchvision s':>14s} {'project/torchvision':>20s} {'target':>7s}")
    for name, (mine, theirs, ratio), target in (("training step", train, TARGET_TRAIN),
                                                ("inference per image", infer, TARGET_INFERENCE)):
        print(f"{name:22s} {mine:10.3f} {theirs:14.3f} {ratio:19.2f}x {target:6.1f}x "
              f"{'met' if ratio >= target else 'NOT met'}")
    print("(seconds: medians over the rounds of each chunk's mean; ratio: median of the per-round images/s "
          "ratios, above 1 = the project is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
