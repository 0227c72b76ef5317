"""What every converter shares: checking a photo, rendering annotations, and writing a dataset's outputs as one
set (staging folders beside the outputs, swapped in under a journal, rolled back after a kill).

Used by the iMaterialist converter (``gluon_fashion.convert``) and the COCO-style ones
(``gluon_fashion.converters.coco_sources``). The behaviour of the output set is described in
``gluon_fashion.convert``'s docstring ("Outputs as a set").
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from pycocotools import mask as coco_mask
from tqdm import tqdm

from .. import rle
from ..errors import UserError
from ..fileio import atomic_open, atomic_save, atomic_write_json
from ..images import image_size, jpeg_file_is_truncated


def _check_photo(path: str, shown_as: str, verify: bool) -> Tuple:
    """(height, width) of a usable photo, or (skip reason, detail) naming it as ``shown_as``."""
    try:
        size = image_size(path)
    except FileNotFoundError:
        return "missing_image", f"{shown_as} does not exist"
    except Exception as exc:  # PIL raises many types on damaged files (UserError, DecompressionBombError...)
        return "unreadable_image", f"{shown_as}: {_without_path(str(exc), path)}"
    if jpeg_file_is_truncated(path):
        return "truncated_image", (f"{shown_as} stops before the JPEG end-of-image marker "
                                   f"({os.path.getsize(path)} bytes: cut off during a download or copy?)")
    if verify:
        warning = _libjpeg_warnings(path)
        if warning:
            return "corrupt_image", f"{shown_as}: decoding at 1/8 scale, libjpeg reports: {warning}"
    return size


def _without_path(message: str, path: str) -> str:
    """An error message with the file's path taken out (the report names the file once, relative to the
    data root; PIL and image_size repeat the absolute path, once or twice)."""
    for form in (f"{path}: ", f" '{path}'", f" {path}", path):
        message = message.replace(form, "")
    return message.strip() or "not a readable image"


_STDERR_CAPTURE: Optional[object] = None  # a worker's scratch file for libjpeg's messages, made on first use


def _libjpeg_warnings(path: str) -> Optional[str]:
    """What libjpeg says while decoding a JPEG at 1/8 scale (None: nothing, or not a JPEG).

    libjpeg reports damaged data ("premature end of data segment", "N extraneous bytes before marker")
    only as warnings that OpenCV prints on stderr, and returns a picture with the damage filled in, so the
    decode's result proves nothing: stderr (file descriptor 2, where the C library writes) is captured
    for the call. 1/8 scale still reads every byte of entropy-coded data, which is where damage shows.
    """
    global _STDERR_CAPTURE
    data = np.fromfile(path, dtype=np.uint8)
    if data[:3].tobytes() != b"\xff\xd8\xff":
        return None  # PNG and the like: their libraries warn about harmless things (colour profiles)
    if _STDERR_CAPTURE is None:
        _STDERR_CAPTURE = tempfile.TemporaryFile()
    capture = _STDERR_CAPTURE
    capture.seek(0)
    capture.truncate()
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(capture.fileno(), 2)
        decoded = cv2.imdecode(data, cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_IGNORE_ORIENTATION)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    capture.seek(0)
    said = " ".join(capture.read().decode("utf-8", "replace").split())
    if decoded is None:
        return said or "the image cannot be decoded"
    return said or None



def _annotation_tails(items: List[Tuple[int, List[int], rle.CocoRLE]]) -> List[str]:
    """JSON of annotations given as (category, attributes, segmentation), each without its leading
    '{"id":..,"image_id":..,' (ids are given after the split). Area and box come from pycocotools, called
    once for the whole batch: per-call overhead would otherwise cost as much as the work."""
    if not items:
        return []
    compressed = [{"size": seg["size"], "counts": seg["counts"].encode("ascii")} for _, _, seg in items]
    areas = coco_mask.area(compressed).tolist()
    boxes = coco_mask.toBbox(compressed).tolist()
    tails = []
    for (category, attributes, segmentation), area, (x, y, w, h) in zip(items, areas, boxes):
        height, width = segmentation["size"]
        # Formatted by hand: json.dumps spends most of its time scanning the KB-long counts string. COCO
        # counts use characters 48..111, of which only the backslash needs escaping; floats print as in json.
        escaped = segmentation["counts"].replace("\\", "\\\\")
        tails.append(f'"category_id":{category},"segmentation":{{"size":[{height},{width}],"counts":"{escaped}"}},'
                     f'"area":{int(area)},"bbox":[{x!r},{y!r},{w!r},{h!r}],"iscrowd":0,'
                     f'"attribute_ids":[{",".join(map(str, attributes))}]}}')
    return tails



def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif _exists(path):
        path.unlink()


def _move(source: Path, target: Path) -> None:
    """Rename (atomic, same file system); the target must not be a non-empty folder."""
    os.replace(source, target)


def _fsync_folder(path: Path) -> None:
    """Make renames in ``path`` durable (a no-op where folders cannot be opened, as on Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) and SIGTERM for a few renames; each takes effect, as it would have, at the end.

    Done with Python-level handlers that only take note, not by blocking the signals: a signal blocked in
    this thread would still be delivered to any other thread (a progress bar's monitor), and Python runs
    its handler, which raises KeyboardInterrupt, in the main thread all the same.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread, which is the only one to receive them
        return
    received: List[int] = []
    held = [signal.SIGINT] + ([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])
    previous = {number: signal.signal(number, lambda number, frame: received.append(number)) for number in held}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        for number in dict.fromkeys(received):
            signal.raise_signal(number)


@contextlib.contextmanager
def _only_conversion_of(root: Path) -> Iterator[None]:
    """One conversion at a time per data root: a second one would swap its outputs over the first's (and
    take its staging folders for leftovers). An advisory lock on the folder itself, so no file is left."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    fd = os.open(root, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{root}: another conversion is running on this folder; wait for it to end "
                            "(nothing was changed)") from None
        except OSError:
            pass  # a file system without locks (some network mounts): go on unlocked
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _OutputSet:
    """A converter's outputs (JSON files in one folder, then one image folder), built in staging folders beside
    them and swapped in together: a run either replaces the whole set or leaves the previous one as it was.

    ``final``: where each output lives (the image folder last); ``staged``: where this run builds it;
    ``previous``: where the outputs it replaces wait during the swap. The journal exists only during the swap
    and lists every output with where its previous version waits, which is all a rollback needs, however far
    the swap got, even when the next run converts another split (another set of outputs).
    """

    final: Dict[str, Path]
    staged: Dict[str, Path]
    previous: Dict[str, Path]
    journal: Path

    @classmethod
    def beside(cls, paths: Dict[str, Path], keys: Sequence[str]) -> "_OutputSet":
        """The set of ``paths[key]`` for ``keys``: JSON files in one folder, then (last key) an image folder."""
        *files, images = keys
        annotations, root = paths[files[0]].parent, paths[images].parent
        new, old = annotations / ".conversion-new", annotations / ".conversion-old"
        final = {key: paths[key] for key in keys}
        staged = {key: new / final[key].name for key in files}
        previous = {key: old / final[key].name for key in files}
        name = final[images].name
        staged[images], previous[images] = root / f".{name}.conversion-new", root / f".{name}.conversion-old"
        return cls(final, staged, previous, annotations / ".conversion-swap")

    @property
    def _files_folder(self) -> Path:
        return next(iter(self.final.values())).parent

    @property
    def _image_key(self) -> str:
        return list(self.final)[-1]

    def _work_folders(self) -> List[Path]:
        first, images = next(iter(self.final)), self._image_key
        return [self.staged[first].parent, self.staged[images], self.previous[first].parent, self.previous[images]]

    def recover(self) -> Optional[str]:
        """Undo what an interrupted earlier run left: a swap cut short (journal present) is rolled back; any
        other leftovers are staging folders or old outputs already replaced, and are removed. Returns a note
        for the summary, or None when there was nothing to do."""
        try:
            if _exists(self.journal):
                with _signals_held():
                    self._roll_back()
                return ("an earlier conversion was stopped while swapping in its outputs: the outputs from "
                        "before it were put back")
            leftovers = [folder for folder in self._work_folders() if _exists(folder)]
            for folder in leftovers:
                _remove(folder)
        except OSError as exc:
            raise UserError(f"cannot clean up after an interrupted earlier conversion: {exc}") from None
        if leftovers:
            return "removed the staging folders an interrupted earlier conversion left behind"
        return None

    def prepare(self, overwrite: bool) -> None:
        """Create the staging folders: UserError (one line, before any work) where a folder is not writable."""
        annotations = self._files_folder
        if _exists(annotations) and not annotations.is_dir():
            raise UserError(f"{annotations}: is a file, not a folder (the JSON files go there); nothing was changed")
        staging_folders = [self.staged[next(iter(self.final))].parent, self.staged[self._image_key]]
        for folder in ([] if annotations.is_dir() else [annotations]) + staging_folders:
            try:
                folder.mkdir()
            except OSError as exc:
                raise UserError(f"{folder.parent}: cannot write there ({exc.strerror or exc}); "
                                "nothing was changed") from None
        image_dir = self.final[self._image_key]
        if overwrite and image_dir.is_dir() and not image_dir.is_symlink() and not os.access(image_dir, os.W_OK | os.X_OK):
            raise UserError(f"{image_dir}: cannot write there, so its old images could not be removed; "
                            "nothing was changed")

    def discard(self) -> None:
        """Remove this run's staging folders (the previous outputs were never touched)."""
        for folder in (self.staged[next(iter(self.final))].parent, self.staged[self._image_key]):
            with contextlib.suppress(OSError):
                _remove(folder)

    def commit(self) -> None:
        """Swap the staged outputs in for the previous ones; on any failure put the previous ones back."""
        with _signals_held():
            had_previous = [key for key in self.final if _exists(self.final[key])]
            atomic_write_json(self.journal, {
                "had_previous": had_previous,
                "outputs": {key: [str(self.final[key]), str(self.previous[key])] for key in self.final},
                "work_folders": [str(folder) for folder in self._work_folders()]})
            _fsync_folder(self.journal.parent)
            try:
                self.previous[next(iter(self.final))].parent.mkdir(exist_ok=True)
                for key in had_previous:
                    _move(self.final[key], self.previous[key])
                for key in self.final:
                    _move(self.staged[key], self.final[key])
                for folder in {self.journal.parent, self.final[self._image_key].parent}:
                    _fsync_folder(folder)
            except BaseException:
                self._roll_back()
                raise
            self.journal.unlink()
            _fsync_folder(self.journal.parent)
            for folder in self._work_folders():  # the replaced outputs and the emptied staging folder
                with contextlib.suppress(OSError):
                    _remove(folder)

    def _roll_back(self) -> None:
        """Put the previous outputs back, wherever the swap stopped; safe to repeat if itself interrupted.

        The outputs come from the journal, so a run of another converter or split rolls back this one's."""
        journal = json.loads(self.journal.read_text(encoding="utf-8"))
        had_previous = set(journal["had_previous"])
        outputs = {key: (Path(final), Path(previous)) for key, (final, previous) in journal["outputs"].items()}
        for key, (final, previous) in outputs.items():
            if key in had_previous:
                if _exists(previous):  # moved aside: put it back (else it never left, or is back already)
                    if _exists(final):
                        _remove(final)
                    _move(previous, final)
            elif _exists(final):  # none before this run: what is there is the new one
                _remove(final)
        for folder in {self.journal.parent} | {final.parent for final, _ in outputs.values()}:
            _fsync_folder(folder)
        self.journal.unlink()
        for folder in [Path(f) for f in journal["work_folders"]] + self._work_folders():
            if _exists(folder):
                _remove(folder)


def _check_outputs_free(paths: Dict[str, Path], keys: Sequence[str], overwrite: bool) -> None:
    """UserError unless ``overwrite`` or none of the outputs ``keys`` (JSON files, then an image folder) exist."""
    if overwrite:
        return
    *files, images = keys
    for key in files:
        if paths[key].exists():
            raise UserError(f"{paths[key]} already exists; pass --overwrite to replace it (nothing was changed)")
    image_dir = paths[images]
    if image_dir.is_dir() and any(image_dir.iterdir()):
        raise UserError(f"{image_dir} already holds files; pass --overwrite to rebuild it (nothing was changed)")


def _place_images(names: List[str], source_dir: Path, target_dir: Path, copy: bool, progress: bool,
                  desc: str = "val images", target_names: Optional[List[str]] = None) -> Tuple[int, int]:
    """Hard-link (or copy) images into ``target_dir``, a new empty folder (as ``target_names``, default the same
    names); returns (linked, copied)."""
    linked = copied = 0
    targets = target_names or names
    for name, target_name in tqdm(list(zip(names, targets)), desc=desc, unit="img", disable=not progress):
        source, target = source_dir / name, target_dir / target_name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not copy:
            try:
                os.link(source, target)
                linked += 1
                continue
            except OSError:
                pass  # other file system, no link support, too many links: copy instead
        atomic_save(target, lambda temp_path: shutil.copyfile(source, temp_path))
        copied += 1
    _fsync_folder(target_dir)
    return linked, copied


def _write_coco(path: Path, info: Dict, images: List[Dict], annotations: Iterable[Tuple[int, str]],
                num_annotations: int, categories: List[Dict], attributes: List[Dict], progress: bool) -> None:
    """Stream a COCO JSON file: the annotations arrive as (image id, pre-rendered JSON tail)."""
    dumps = lambda obj: json.dumps(obj, separators=(",", ":"))  # noqa: E731
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(f'{{"info":{dumps(info)},"images":{dumps(images)},"annotations":[')
        bar = tqdm(total=num_annotations, desc=f"write {path.name}", unit="ann", disable=not progress,
                   mininterval=0.5)
        for annotation_id, (image_id, tail) in enumerate(annotations, start=1):
            handle.write(f'{"," if annotation_id > 1 else ""}{{"id":{annotation_id},"image_id":{image_id},{tail}')
            if annotation_id % 4096 == 0:
                bar.update(4096)
        bar.update(num_annotations - bar.n)
        bar.close()
        handle.write(f'],"categories":{dumps(categories)},"attributes":{dumps(attributes)}}}')


def _require_folder(path: Path, name: str, expected: str) -> None:
    """UserError unless ``path`` is a folder, saying what it is instead and what was expected there."""
    if path.is_dir():
        return
    what = "is a file, not a folder" if path.exists() else "no such folder"
    raise UserError(f"{name}: {what} (expected {expected})")

