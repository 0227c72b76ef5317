#!/usr/bin/env python
"""The GPU check in one command: what MXNet sees, short trainings of both trainers on 1 and 2 GPUs with and
without mixed precision, validation, prediction, a Kaggle submission, CPU <-> GPU checkpoint agreement and the
GPU tests, ending in one summary table (exit 1 if any check failed).

    python benchmarks/gpu/gpu_check.py          # a machine with a CUDA build of MXNet (make gpu-check)
    python benchmarks/gpu/gpu_check.py --cpu    # dry run: the same checks on CPU contexts, tiny settings

Everything runs through the project's command-line entry points, in subprocesses, on a generated sample
dataset (tools/make_sample_dataset.py + tools/convert_imaterialist_to_coco.py) under ``--work`` (default
benchmarks/_work/gpu_check/, emptied first):

* gpus / gpu kernels: the GPUs the CUDA driver and MXNet see (name, compute capability, memory), the SASS/PTX
  architectures of this libmxnet.so (inspect_wheel.py) and a few kernels (dot, convolution) on each GPU: a
  build without code for the GPU's generation fails here, with the reason, and the GPU checks after it are
  not run.
* mrcnn / seg NGPU PRECISION: train_mask_rcnn.py ``--use-fpn --network resnet50_v1b --no-pretrained`` (small
  RoI budget and image size) and train_segmentation.py DeepLabV3 ``--no-pretrained`` for a fixed number of
  iterations (dataset size / batch x epochs), on 1 GPU and, where there are two, on 2 GPUs with the same
  global batch split between them, in fp32 and with ``--amp`` / ``--dtype float16``. Each reports images/s
  (``samples_s`` of the last ``train_epoch`` record of the run's ``*_metrics.jsonl``), peak GPU memory
  (nvidia-smi, else ``mx.context.gpu_memory_info``, sampled every 0.25 s, minus the level before the run;
  peak resident memory of the trainer on CPU) and the loss of the first and last ``train_iter`` record, which
  must be finite and falling; the last epoch is validated (the ``val`` record must be there and finite).
* predict / submission: tools/predict.py and tools/write_submission.py ``--gpus 0`` on the 1-GPU fp32
  checkpoints, tools/check_submission.py on the CSV.
* xdev: CPU-trained checkpoints loaded on the GPU and GPU-trained ones on the CPU, predictions compared within
  compare_devices.py's stated tolerances (the CPU trainings run beside the GPU ones).
* pytest -m gpu tests/test_gpu.py.

``--cpu`` runs the same list on CPU contexts (1 context, and 2 with ``--cpu-contexts 2``), with tiny
images and ResNet-18 for DeepLabV3, compares checkpoints between cpu(0) and cpu(1), and marks what needs a
GPU (mixed precision, the kernel probe) "skipped: no GPU". Environment: ``MXNET_CUDNN_AUTOTUNE_DEFAULT=0``
unless set (Mask R-CNN's input sizes vary; autotuning each new shape would dominate such short runs).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PASS, FAIL, SKIP, WARN = "pass", "FAIL", "skipped", "warn"
GIB = float(1 << 30)
REEXEC_FLAG = "GF_GPU_CHECK_REEXEC"


@dataclass
class Profile:
    """Sizes of one mode: the sample dataset, the trainings and the time limits."""

    name: str
    num_train: int
    val_num: int
    num_test: int
    min_size: int
    max_size: int
    mrcnn_short: int
    mrcnn_max_size: int
    mrcnn_budget: List[str]
    mrcnn_batch: int
    mrcnn_lr: float
    seg_backbone: str
    seg_base: int
    seg_crop: int
    seg_batch: int
    seg_lr: float
    epochs: int
    workers: int
    timeout_s: int
    budget_s: int


GPU_PROFILE = Profile(
    "gpu", num_train=56, val_num=8, num_test=8, min_size=320, max_size=640, mrcnn_short=384, mrcnn_max_size=640,
    mrcnn_budget=["--rpn-train-pre-nms", "1000", "--rpn-train-post-nms", "300", "--rcnn-num-sample", "64",
                  "--rpn-test-pre-nms", "1000", "--rpn-test-post-nms", "100"],
    mrcnn_batch=8, mrcnn_lr=0.001, seg_backbone="resnet50", seg_base=320, seg_crop=256, seg_batch=8, seg_lr=0.002,
    epochs=2, workers=4, timeout_s=300, budget_s=480)
CPU_PROFILE = Profile(
    "cpu", num_train=14, val_num=2, num_test=2, min_size=160, max_size=240, mrcnn_short=128, mrcnn_max_size=192,
    mrcnn_budget=["--rpn-train-pre-nms", "300", "--rpn-train-post-nms", "100", "--rcnn-num-sample", "32",
                  "--rpn-test-pre-nms", "300", "--rpn-test-post-nms", "50"],
    mrcnn_batch=2, mrcnn_lr=0.0005, seg_backbone="resnet18", seg_base=96, seg_crop=64, seg_batch=2, seg_lr=0.001,
    epochs=1, workers=0, timeout_s=600, budget_s=600)


@dataclass
class Row:
    """One line of the summary table."""

    name: str
    result: str
    figure: str
    seconds: float = 0.0
    details: Dict = field(default_factory=dict)


class Check:
    """Runs the steps, prints progress, collects :class:`Row` s."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.cpu = bool(args.cpu)
        self.profile = CPU_PROFILE if self.cpu else GPU_PROFILE
        self.work = args.work.resolve()
        self.rows: List[Row] = []
        self.started = time.time()
        self.lock = threading.Lock()
        self.children: Dict[int, subprocess.Popen] = {}
        self.gpu_ids: List[int] = []
        self.env = child_env()

    # ------------------------------------------------------------------------------------------ plumbing
    def say(self, text: str) -> None:
        """A progress line with the elapsed time."""
        elapsed = time.time() - self.started
        with self.lock:
            print(f"[{int(elapsed // 60):02d}:{int(elapsed % 60):02d}] {text}", flush=True)

    def add(self, row: Row) -> Row:
        """Record a row and print it."""
        with self.lock:
            self.rows.append(row)
        self.say(f"{row.name}: {row.result}" + (f" - {row.figure}" if row.figure else ""))
        return row

    def run(self, name: str, argv: Sequence[str], log: Path, timeout: Optional[float] = None,
            env: Optional[Dict[str, str]] = None, gpus: Sequence[int] = ()) -> "RunResult":
        """Run ``argv`` from the repository root, output to ``log``; peak memory of ``gpus`` (GPU mode) or of the
        process (CPU) is sampled while it runs."""
        log.parent.mkdir(parents=True, exist_ok=True)
        self.say(f"{name}: {' '.join(_quote(a) for a in argv[1:])}  (log {_rel(log)})")
        sampler = GpuMemorySampler(gpus) if gpus else None
        if sampler:
            sampler.start()
        t0 = time.time()
        with open(log, "w") as out:
            proc = subprocess.Popen(list(argv), cwd=str(REPO), stdout=out, stderr=subprocess.STDOUT,
                                    env=env or self.env, start_new_session=True)
            with self.lock:
                self.children[proc.pid] = proc
            rc, peak_rss, timed_out = None, 0, False
            deadline = t0 + (timeout or self.profile.timeout_s)
            while rc is None:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    rc = os.waitstatus_to_exitcode(status)
                    peak_rss = usage.ru_maxrss * 1024
                    proc.returncode = rc
                    break
                if time.time() > deadline:
                    timed_out = True
                    _kill_group(proc)
                time.sleep(0.1)
            with self.lock:
                self.children.pop(proc.pid, None)
        peaks = sampler.stop() if sampler else {}
        return RunResult(rc=rc, seconds=time.time() - t0, log=log, peak_rss=peak_rss, gpu_peaks=peaks,
                         timed_out=timed_out)

    def kill_children(self) -> None:
        """Stop every process group this check started and that still runs."""
        with self.lock:
            procs = list(self.children.values())
        for proc in procs:
            _kill_group(proc)

    # ------------------------------------------------------------------------------------------- steps
    def environment(self) -> bool:
        """Interpreter, numpy and MXNet as the trainers will see them; False when MXNet cannot be used."""
        probe = ("import sys, gluon_fashion, numpy, mxnet as mx; f = mx.runtime.Features(); "
                 "print(sys.version.split()[0], numpy.__version__, numpy.__file__, mx.__version__, mx.__file__, "
                 "','.join(k for k in ('CUDA','CUDNN','NCCL','CUDA_RTC','MKLDNN') if f.is_enabled(k)) or '-')")
        proc = subprocess.run([sys.executable, "-c", probe], cwd=str(REPO), env=self.env, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            error = _last_error(proc.stdout + proc.stderr)
            if "libcuda.so" in error:
                error += (" (the NVIDIA driver's library: no GPU driver on this machine; --cpu runs the dry run "
                          "with the CPU build)")
            elif re.search(r"lib(cudart|cublas|cudnn|cufft|curand|cusolver|cusparse|nccl|nvrtc|nvToolsExt)", error):
                error += (" (a CUDA 11 library MXNet links against: install NVIDIA's nvidia-*-cu11 wheels next to "
                          "mxnet, as benchmarks/gpu/fetch_wheels.py does, or put CUDA 11.x on LD_LIBRARY_PATH)")
            self.add(Row("environment", FAIL, error))
            return False
        py, np_version, np_file, mx_version, mx_file, features = proc.stdout.split()[-6:]
        self.mx_file = mx_file
        self.features = features.split(",")
        ok = np_version.startswith("1.") and mx_version == "1.9.1"
        figure = (f"Python {py}, numpy {np_version} ({_short_path(np_file)}), mxnet {mx_version} "
                  f"({_short_path(mx_file)}; {features})")
        if not self.cpu and "CUDA" not in self.features:
            self.add(Row("environment", FAIL, figure + ": a CPU build of MXNet (install mxnet-cu112, or use --cpu)"))
            return False
        self.add(Row("environment", PASS if ok else FAIL,
                     figure if ok else figure + ": need numpy 1.x and mxnet 1.9.1"))
        return ok

    def gpus(self) -> bool:
        """List the GPUs (driver and MXNet) and the build's architectures; False when there is none to use."""
        if self.cpu:
            self.add(Row("gpus", SKIP, "no GPU: --cpu dry run on CPU contexts"))
            self.add(Row("gpu kernels", SKIP, "no GPU"))
            return False
        devices, error = cuda_devices()
        proc = subprocess.run([sys.executable, "-c", "import gluon_fashion, mxnet as mx; print(mx.context.num_gpus())"],
                              cwd=str(REPO), env=self.env, capture_output=True, text=True)
        seen = int(proc.stdout.split()[-1]) if proc.returncode == 0 and proc.stdout.split() else 0
        for dev in devices:
            self.say(f"  GPU {dev['index']}: {dev['name']}, compute capability {dev['cc'] / 10:.1f}, "
                     f"{dev['memory'] / GIB:.0f} GiB")
        build = self.build_archs()
        if not seen:
            why = error or _last_error(proc.stdout + proc.stderr) or "mx.context.num_gpus() == 0"
            self.add(Row("gpus", FAIL, f"MXNet sees no GPU ({why}); driver sees {len(devices)}"))
            return False
        self.gpu_ids = list(range(min(seen, self.args.max_gpus)))
        names = ", ".join(f"{d['name']} (sm_{d['cc']})" for d in devices) or f"{seen} GPU(s)"
        self.add(Row("gpus", PASS, f"MXNet sees {seen}: {names}; build {build}"))
        return self.kernels(devices)

    def build_archs(self) -> str:
        """``SASS sm_50,...; PTX none`` of this libmxnet.so (read from its fat binaries)."""
        try:
            sys.path.insert(0, str(HERE))
            from inspect_wheel import fatbin_summary
            summary = fatbin_summary(Path(self.mx_file).parent / "libmxnet.so")
            self.sass, self.ptx = summary["sass"], summary["ptx"]
            return (f"SASS {','.join(f'sm_{s}' for s in summary['sass']) or 'none'}; "
                    f"PTX {','.join(f'sm_{s}' for s in summary['ptx']) or 'none'}")
        except Exception as exc:  # diagnostics only
            self.sass, self.ptx = None, None
            return f"architectures unknown ({exc})"

    def kernels(self, devices: List[Dict]) -> bool:
        """A dot product and a convolution on each GPU used."""
        code = ("import sys, gluon_fashion, mxnet as mx\n"
                "for i in map(int, sys.argv[1:]):\n"
                "    ctx = mx.gpu(i)\n"
                "    a = mx.nd.random.uniform(shape=(64, 64), ctx=ctx)\n"
                "    b = mx.nd.dot(a, a) + 1\n"
                "    c = mx.nd.Convolution(a.reshape((1, 1, 64, 64)), mx.nd.ones((2, 1, 3, 3), ctx=ctx), kernel=(3, 3),"
                " num_filter=2, no_bias=True)\n"
                "    print('gpu', i, float(b.sum().asscalar()), float(c.sum().asscalar()), flush=True)\n")
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-c", code] + [str(i) for i in self.gpu_ids], cwd=str(REPO),
                              env=self.env, capture_output=True, text=True, timeout=300)
        if proc.returncode == 0:
            self.add(Row("gpu kernels", PASS, f"dot + convolution on GPU {','.join(map(str, self.gpu_ids))}",
                         time.time() - t0))
            return True
        reason = _last_error(proc.stdout + proc.stderr)
        sys.path.insert(0, str(HERE))
        from inspect_wheel import runs_on
        for dev in devices:
            if self.sass is not None and not runs_on(dev["cc"], self.sass, self.ptx)[0]:
                reason += f" | {dev['name']} is sm_{dev['cc']}: {runs_on(dev['cc'], self.sass, self.ptx)[1]}"
                break
        self.add(Row("gpu kernels", FAIL, reason, time.time() - t0))
        return False

    def make_dataset(self, profile: Profile, name: str) -> Optional[Path]:
        """Generate and convert a sample dataset; its root, or None on failure."""
        root = self.work / name
        t0 = time.time()
        make = self.run(f"data {name}", [sys.executable, "tools/make_sample_dataset.py", "--out", str(root),
                                         "--num-train", str(profile.num_train), "--num-test", str(profile.num_test),
                                         "--min-size", str(profile.min_size), "--max-size", str(profile.max_size),
                                         "--seed", "0", "--overwrite", "--no-progress"],
                        self.work / "logs" / f"data_{name}_make.log", timeout=300)
        conv = make.rc == 0 and self.run(f"data {name}", [
            sys.executable, "tools/convert_imaterialist_to_coco.py", "--data_root", str(root),
            "--val_num", str(profile.val_num), "--num_workers", "1", "--no_progress", "--overwrite"],
            self.work / "logs" / f"data_{name}_convert.log", timeout=300)
        if make.rc != 0 or not conv or conv.rc != 0:
            self.add(Row(f"data {name}", FAIL, _last_error(_tail((conv or make).log)), time.time() - t0))
            return None
        counts = {split: _count_images(root / "annotations" / f"rle_instances_{split}.json")
                  for split in ("train", "val")}
        self.add(Row(f"data {name}", PASS, f"{counts['train']} train / {counts['val']} val / {profile.num_test} test "
                     f"images, {profile.min_size}-{profile.max_size} px", time.time() - t0))
        return root

    def train(self, task: str, devices: str, count: int, precision: str, root: Path, profile: Profile,
              label: Optional[str] = None) -> Optional[Path]:
        """One short training; its ``*_last.params``, or None when it failed or was skipped."""
        label = label or f"{task} {count}{devices} {precision}"
        gpu = devices == "gpu"
        if precision != "fp32" and not gpu:
            why = "--amp is GPU only" if task == "mrcnn" else "--dtype float16 is a GPU path"
            self.add(Row(label, SKIP, f"no GPU ({why})"))
            return None
        if gpu and count > len(self.gpu_ids):
            self.add(Row(label, SKIP, f"needs {count} GPUs, {len(self.gpu_ids)} available"))
            return None
        out = self.work / "runs" / label.replace(" ", "_")
        n_train = _count_images(root / "annotations" / "rle_instances_train.json")
        batch = profile.mrcnn_batch if task == "mrcnn" else profile.seg_batch
        iters = max(1, n_train // batch) * profile.epochs
        log_interval = max(1, iters // 4)
        if gpu:
            device_flags = ["--gpus", ",".join(str(i) for i in self.gpu_ids[:count])]
        else:
            device_flags = ["--gpus", ""] + (["--cpu-contexts", str(count)] if count > 1 else [])
        common = ["--dataset-root", str(root), "--no-pretrained", "--epochs", str(profile.epochs),
                  "--batch-size", str(batch), "--log-interval", str(log_interval),
                  "--val-interval", str(profile.epochs), "--save-interval", "1000", "-j", str(profile.workers)]
        if task == "mrcnn":
            argv = ([sys.executable, "train_mask_rcnn.py", "--use-fpn", "--network", "resnet50_v1b",
                     "--classes", "main",
                     "--short", str(profile.mrcnn_short), "--max-size", str(profile.mrcnn_max_size), "--lr",
                     str(profile.mrcnn_lr), "--lr-warmup", "0", "--clip-gradient", "1", "--save-prefix", str(out) + "/"]
                    + profile.mrcnn_budget + common + device_flags + (["--amp"] if precision == "amp" else []))
        else:
            argv = ([sys.executable, "train_segmentation.py", "--model", "deeplabv3",
                     "--backbone", profile.seg_backbone,
                     "--base-size", str(profile.seg_base), "--crop-size", str(profile.seg_crop), "--lr",
                     str(profile.seg_lr), "--test-batch-size", str(batch), "--checkname", "gpu_check",
                     "--logdir", str(out)] + common + device_flags
                    + (["--dtype", "float16"] if precision == "fp16" else []))
        env = None
        if not gpu and not self.cpu:  # a CPU training beside the GPU ones: leave cores to their data loaders
            env = dict(self.env, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // 4)))
        result = self.run(label, argv, self.work / "logs" / f"{label.replace(' ', '_')}.log", env=env,
                          gpus=self.gpu_ids[:count] if gpu else ())
        return self.judge_training(label, task, result, out, iters)

    def judge_training(self, label: str, task: str, result: "RunResult", out: Path, iters: int) -> Optional[Path]:
        """Read the run's metrics and checkpoint, add the row; the checkpoint when every criterion holds."""
        metrics = sorted(out.rglob("*_metrics.jsonl"))
        records = _read_jsonl(metrics[0]) if metrics else []
        steps = [r for r in records if r.get("split") == "train_iter"]
        epochs = [r for r in records if r.get("split") == "train_epoch"]
        vals = [r for r in records if r.get("split") == "val"]
        losses = [float(r["values"].get("loss", float("nan"))) for r in steps]
        speed = float(epochs[-1]["values"].get("samples_s", float("nan"))) if epochs else float("nan")
        memory = _memory_text(result)
        figure = f"{speed:.1f} img/s, {memory}"
        if losses:
            figure += f", loss {losses[0]:.4g} -> {losses[-1]:.4g}"
        metric_name = "segm_mAP" if task == "mrcnn" else "mIoU"
        metric = float(vals[-1]["values"].get(metric_name, float("nan"))) if vals else float("nan")
        if vals:
            figure += f", val {metric_name} {metric:.3f}"
        figure += f", {iters} iters"
        problems = []
        if result.timed_out:
            problems.append(f"timed out after {result.seconds:.0f} s")
        elif result.rc != 0:
            problems.append(f"exit {result.rc}: {_last_error(_tail(result.log))}")
        if result.rc == 0:
            if len(losses) < 2:
                problems.append(f"only {len(losses)} train_iter record(s)")
            elif not all(math.isfinite(v) for v in losses):
                problems.append("non-finite loss")
            elif not losses[-1] < losses[0]:
                problems.append("loss not falling")
            if not vals or not math.isfinite(metric):
                problems.append("no finite validation record")
            if not math.isfinite(speed):
                problems.append("no train_epoch samples_s")
        checkpoint = sorted(out.rglob("*_last.params"))
        if result.rc == 0 and not checkpoint:
            problems.append("no _last checkpoint")
        if result.rc != 0:
            figure = f"after {result.seconds:.0f} s"
        self.add(Row(label, FAIL if problems else PASS, "; ".join(problems + [figure]) if problems else figure,
                     result.seconds, {"images_s": speed, "losses": losses, "val": metric, "peak_bytes": result.peak(),
                                      "log": str(result.log)}))
        return checkpoint[0] if checkpoint and not problems else None

    def predict_and_submit(self, task: str, weights: Optional[Path], root: Optional[Path]) -> None:
        """tools/predict.py, tools/write_submission.py and tools/check_submission.py on one checkpoint."""
        where = "gpu 0" if not self.cpu else "cpu"
        if weights is None or root is None:
            self.add(Row(f"predict {task} ({where})", SKIP, "no checkpoint (its training failed or was skipped)"))
            self.add(Row(f"submission {task} ({where})", SKIP, "no checkpoint"))
            return
        gpu_flags = ["--gpus", str(self.gpu_ids[0])] if not self.cpu else []
        out = self.work / f"predict_{task}"
        argv = [sys.executable, "tools/predict.py", "--weights", str(weights), "--images", str(root / "val"),
                "--output", str(out), "--overwrite"] + gpu_flags
        if task == "mrcnn":
            argv += ["--annotations", str(root / "annotations" / "resize_rle_instances_val.json"),
                     "--score-threshold", "0.05"]
        result = self.run(f"predict {task}", argv, self.work / "logs" / f"predict_{task}.log",
                          gpus=self.gpu_ids[:1])
        pictures = len([p for p in out.glob("*") if p.suffix == ".png"]) if out.is_dir() else 0
        figure = f"{pictures} pictures, {_memory_text(result)}"
        if task == "mrcnn" and (out / "results.json").is_file():
            figure = f"{len(json.loads((out / 'results.json').read_text()))} detections in results.json, " + figure
        ok = result.rc == 0 and pictures > 0
        self.add(Row(f"predict {task} ({where})", PASS if ok else FAIL,
                     figure if ok else f"exit {result.rc}: {_last_error(_tail(result.log))}", result.seconds))
        csv = self.work / f"submission_{task}.csv"
        sample = root / "sample_submission.csv"
        write = self.run(f"submission {task}", [sys.executable, "tools/write_submission.py", "--weights", str(weights),
                                                "--test-root", str(root / "test"), "--sample-csv", str(sample),
                                                "--output", str(csv), "--overwrite"] + gpu_flags,
                         self.work / "logs" / f"submission_{task}.log", gpus=self.gpu_ids[:1])
        check = write.rc == 0 and self.run(f"check {task}", [sys.executable, "tools/check_submission.py", str(csv),
                                                             "--sample", str(sample)],
                                           self.work / "logs" / f"check_{task}.log")
        if write.rc != 0 or not check or check.rc != 0:
            failed = write if write.rc != 0 else check
            which = "write" if failed is write else "check"
            self.add(Row(f"submission {task} ({where})", FAIL,
                         f"{which} exit {failed.rc}: {_last_error(_tail(failed.log))}", write.seconds))
            return
        rows = max(0, sum(1 for _ in open(csv)) - 1)
        self.add(Row(f"submission {task} ({where})", PASS, f"{rows} rows, check_submission.py ok",
                     write.seconds + check.seconds))

    def cross_device(self, pairs: List[Tuple[str, Optional[Path]]], images: Optional[Path]) -> None:
        """Load each checkpoint on two devices and compare (compare_devices.py, one process)."""
        devices = "cpu:0,cpu:1" if self.cpu else f"cpu,gpu:{self.gpu_ids[0]}"
        usable = [(n, w) for n, w in pairs if w is not None]
        for name, weights in pairs:
            if weights is None:
                self.add(Row(f"xdev {name}", SKIP, "no checkpoint (its training failed or was skipped)"))
        if not usable or images is None:
            return
        out = self.work / "xdev.json"
        argv = [sys.executable, str(HERE / "compare_devices.py"), "--devices", devices, "--images", str(images),
                "--max-images", "2", "--json-out", str(out)]
        for name, weights in usable:
            argv += ["--checkpoint", f"{name}={weights}"]
        env = dict(self.env, NVIDIA_TF32_OVERRIDE="0")
        result = self.run("xdev", argv, self.work / "logs" / "xdev.log", env=env, gpus=self.gpu_ids[:1])
        found = {r["name"]: r for r in json.loads(out.read_text())["results"]} if out.is_file() else {}
        for name, _ in usable:
            r = found.get(name)
            label = f"xdev {name} ({devices.replace(',', ' vs ')})"
            if r is None:
                self.add(Row(label, FAIL, f"no result (exit {result.rc}: {_last_error(_tail(result.log))})"))
            else:
                self.add(Row(label, PASS if r["ok"] else FAIL, r["figure"], r.get("seconds", 0.0)))

    def pytest(self) -> None:
        """``pytest -m gpu tests/test_gpu.py``."""
        argv = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py", "-q", "-rs", "-p", "no:cacheprovider"]
        if self.args.skip_pytest:
            self.add(Row("pytest -m gpu", SKIP, "--skip-pytest"))
            return
        result = self.run("pytest -m gpu", argv, self.work / "logs" / "pytest_gpu.log", timeout=600)
        text = _tail(result.log, 4000)
        counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors)\b", text)}
        summary = ", ".join(f"{v} {k}" for k, v in counts.items()) or _last_error(text)
        if result.rc == 0 and counts.get("passed", 0) == 0 and counts.get("skipped", 0) > 0:
            self.add(Row("pytest -m gpu", SKIP, f"no GPU: {summary}", result.seconds))
        else:
            self.add(Row("pytest -m gpu", PASS if result.rc == 0 and counts.get("passed") else FAIL,
                         summary, result.seconds))

    # -------------------------------------------------------------------------------------------- main
    def main(self) -> int:
        """Every step in order, then the table; 0 when nothing failed."""
        mode = "dry run on CPU contexts (--cpu)" if self.cpu else "GPU"
        self.say(f"gpu_check: {mode}; work folder {_rel(self.work)}")
        if self.work.exists() and not self.args.keep_work:
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True, exist_ok=True)
        if self.environment():
            usable = self.gpus()
            self.body(usable)
        return self.summary()

    def body(self, gpu_ok: bool) -> None:
        """Data, trainings, predictions, cross-device comparisons and tests."""
        p = self.profile
        dev = "cpu" if self.cpu else "gpu"
        if not self.cpu and not gpu_ok:
            self.add(Row("GPU checks", FAIL, "not run: no usable GPU (see the rows above)"))
            self.pytest()
            return
        tiny = self.make_dataset(CPU_PROFILE, "sample_tiny")
        root = tiny if self.cpu else self.make_dataset(GPU_PROFILE, "sample_gpu")
        cpu_trained: Dict[str, Optional[Path]] = {}
        background = None
        if not self.cpu and tiny is not None:
            def cpu_runs() -> None:
                for task in ("mrcnn", "seg"):
                    cpu_trained[task] = self.train(task, "cpu", 1, "fp32", tiny, CPU_PROFILE,
                                                   label=f"{task} cpu fp32 (for xdev)")
            background = threading.Thread(target=cpu_runs, daemon=True)
            background.start()
        base: Dict[str, Optional[Path]] = {}
        for task, low in (("mrcnn", "amp"), ("seg", "fp16")):
            for count in (1, 2):
                for precision in ("fp32", low):
                    if root is None:
                        self.add(Row(f"{task} {count}{dev} {precision}", SKIP, "no dataset"))
                        continue
                    weights = self.train(task, dev, count, precision, root, p)
                    if count == 1 and precision == "fp32":
                        base[task] = weights
        for task in ("mrcnn", "seg"):
            self.predict_and_submit(task, base.get(task), root)
        if background is not None:
            background.join()
        if self.cpu:
            pairs = [("mrcnn cpu-trained", base.get("mrcnn")), ("seg cpu-trained", base.get("seg"))]
        else:
            pairs = [("mrcnn cpu-trained", cpu_trained.get("mrcnn")), ("mrcnn gpu-trained", base.get("mrcnn")),
                     ("seg cpu-trained", cpu_trained.get("seg")), ("seg gpu-trained", base.get("seg"))]
        self.cross_device(pairs, (root / "val") if root is not None else None)
        self.pytest()

    def summary(self) -> int:
        """Print the table, write summary.json; the exit status."""
        total = time.time() - self.started
        budget = self.profile.budget_s
        self.rows.append(Row("wall time", PASS if total <= budget else WARN,
                             f"{total:.0f} s (budget {budget} s{'' if total <= budget else ', exceeded'})", total))
        width = max(len(r.name) for r in self.rows)
        title = "gpu_check summary" + (" (--cpu dry run: 'cpu' = CPU contexts)" if self.cpu else "")
        lines = [title, f"{'check'.ljust(width)}  result   figure", "-" * (width + 60)]
        lines += [f"{r.name.ljust(width)}  {r.result.ljust(7)}  {r.figure}" for r in self.rows]
        failed = [r.name for r in self.rows if r.result == FAIL]
        lines.append(f"{len(failed)} failed, {sum(r.result == PASS for r in self.rows)} passed, "
                     f"{sum(r.result == SKIP for r in self.rows)} skipped"
                     + (f": {', '.join(failed)}" if failed else ""))
        print("\n" + "\n".join(lines), flush=True)
        data = {"mode": self.profile.name, "seconds": round(total, 1),
                "rows": [{"name": r.name, "result": r.result, "figure": r.figure, "seconds": round(r.seconds, 1),
                          **({"details": r.details} if r.details else {})} for r in self.rows]}
        for path in [self.work / "summary.json"] + ([self.args.summary_json] if self.args.summary_json else []):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=1) + "\n")
        (self.work / "summary.txt").write_text("\n".join(lines) + "\n")
        return 1 if failed else 0


@dataclass
class RunResult:
    """What :meth:`Check.run` observed."""

    rc: int
    seconds: float
    log: Path
    peak_rss: int
    gpu_peaks: Dict[int, int]
    timed_out: bool

    def peak(self) -> int:
        """Peak GPU memory (largest over the GPUs sampled) or, without GPUs, peak resident memory, in bytes."""
        return max(self.gpu_peaks.values()) if self.gpu_peaks else self.peak_rss


class GpuMemorySampler:
    """Peak memory use of some GPUs while a subprocess runs, above the level before it started:
    nvidia-smi where present, else ``mx.context.gpu_memory_info`` in this process."""

    def __init__(self, gpus: Sequence[int], interval: float = 0.25):
        self.gpus = list(gpus)
        self.interval = interval
        self.smi = shutil.which("nvidia-smi")
        self.stop_event = threading.Event()
        self.peak: Dict[int, int] = {}
        self.base: Dict[int, int] = {}
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def read(self) -> Dict[int, int]:
        """Used bytes of each GPU now."""
        if self.smi:
            out = subprocess.run([self.smi, "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout
            used = {int(i): int(float(m)) << 20 for i, m in (line.split(",") for line in out.strip().splitlines())}
            return {g: used.get(g, 0) for g in self.gpus}
        import gluon_fashion  # noqa: F401
        import mxnet as mx
        return {g: (lambda free_total: free_total[1] - free_total[0])(mx.context.gpu_memory_info(g)) for g in self.gpus}

    def start(self) -> None:
        """Take the baseline and start sampling."""
        try:
            self.base = self.read()
        except Exception:
            self.base = {}
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                for gpu, used in self.read().items():
                    self.peak[gpu] = max(self.peak.get(gpu, 0), used - self.base.get(gpu, 0))
            except Exception:
                pass

    def stop(self) -> Dict[int, int]:
        """Stop sampling; ``{gpu: peak bytes above the baseline}``."""
        self.stop_event.set()
        self.thread.join(timeout=15)
        return dict(self.peak)


def cuda_devices() -> Tuple[List[Dict], str]:
    """GPUs as the CUDA driver reports them (``libcuda.so.1`` through ctypes): name, compute capability (e.g. 90),
    memory; and an error text when the driver cannot be used."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        return [], f"no CUDA driver ({exc})"
    if cuda.cuInit(0) != 0:
        return [], "cuInit failed"
    count = ctypes.c_int()
    cuda.cuDeviceGetCount(ctypes.byref(count))
    devices = []
    for index in range(count.value):
        handle, major, minor, memory = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_size_t()
        name = ctypes.create_string_buffer(256)
        cuda.cuDeviceGet(ctypes.byref(handle), index)
        cuda.cuDeviceGetName(name, 256, handle)
        cuda.cuDeviceComputeCapability(ctypes.byref(major), ctypes.byref(minor), handle)
        cuda.cuDeviceTotalMem_v2(ctypes.byref(memory), handle)
        devices.append({"index": index, "name": name.value.decode(errors="replace"),
                        "cc": major.value * 10 + minor.value, "memory": memory.value})
    return devices, ""


def cuda_library_dirs() -> List[str]:
    """``nvidia/*/lib`` folders of NVIDIA's CUDA library wheels installed beside mxnet (the sys.path entry that
    holds mxnet: a venv's site-packages or a ``pip install --target`` folder), not those of other frameworks."""
    for entry in sys.path:
        if os.path.isfile(os.path.join(entry or ".", "mxnet", "__init__.py")):
            found = sorted(glob(os.path.join(entry or ".", "nvidia", "*", "lib")))
            return [d for d in found if glob(os.path.join(d, "*.so*"))]
    return []


def ensure_cuda_library_path() -> None:
    """Re-run this script once with those folders first on LD_LIBRARY_PATH, so that libmxnet.so of a CUDA build
    finds libcudart.so.11.0 & co. there (its RPATH is its own folder only); the trainers inherit it."""
    dirs = cuda_library_dirs()
    current = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if not dirs or all(d in current for d in dirs) or os.environ.get(REEXEC_FLAG):
        return
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(dirs + current)
    os.environ[REEXEC_FLAG] = "1"
    print(f"gpu_check: LD_LIBRARY_PATH += {len(dirs)} CUDA library folders of nvidia-*-cu11 wheels; restarting",
          flush=True)
    os.execv(sys.executable, [sys.executable] + sys.argv)


def child_env() -> Dict[str, str]:
    """The trainers' environment: the repository importable, unbuffered output, no cuDNN autotuning by default."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO) not in paths:
        paths.append(str(REPO))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("MXNET_CUDNN_AUTOTUNE_DEFAULT", "0")
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_jsonl(path: Path) -> List[Dict]:
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pass
    return records


def _count_images(annotations: Path) -> int:
    try:
        return len(json.loads(annotations.read_text())["images"])
    except (OSError, ValueError, KeyError):
        return 0


def _tail(path: Path, chars: int = 6000) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - chars))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def _last_error(text: str) -> str:
    """The most telling line of a failure's output: an 'error:'/'Error' line, else the last non-empty one."""
    lines = [l.strip() for l in re.split(r"[\r\n]+", text) if l.strip()]
    for line in reversed(lines):
        if re.search(r"error|Error|ERROR|Check failed|Traceback", line) and not line.startswith("File "):
            return line[:400]
    return lines[-1][:400] if lines else "(no output)"


def _memory_text(result: RunResult) -> str:
    if result.gpu_peaks:
        return "peak GPU mem " + "/".join(f"{v / GIB:.1f}" for _, v in sorted(result.gpu_peaks.items())) + " GiB"
    return f"peak RSS {result.peak_rss / GIB:.1f} GiB"


def _quote(arg: str) -> str:
    return arg if arg and re.fullmatch(r"[\w./,:=+-]+", arg) else repr(arg)


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _short_path(path: str) -> str:
    parts = Path(path).parts
    return str(Path(*parts[-3:-1])) if len(parts) > 3 else path


def main(argv: Optional[List[str]] = None) -> int:
    """Parse the flags, run the check."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="dry run on CPU contexts with tiny settings")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "_work" / "gpu_check",
                        help="work folder, emptied first (default: benchmarks/_work/gpu_check)")
    parser.add_argument("--keep-work", action="store_true", help="do not empty --work first")
    parser.add_argument("--max-gpus", type=int, default=2, help="use at most this many GPUs (default: %(default)s)")
    parser.add_argument("--skip-pytest", action="store_true", help="leave out pytest -m gpu")
    parser.add_argument("--summary-json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    if args.max_gpus < 1:
        parser.error("--max-gpus must be >= 1")
    ensure_cuda_library_path()
    check = Check(args)
    try:
        return check.main()
    except KeyboardInterrupt:
        check.kill_children()
        print("gpu_check: interrupted", file=sys.stderr)
        return 130
    finally:
        check.kill_children()


if __name__ == "__main__":
    sys.exit(main())
