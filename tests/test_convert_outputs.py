"""The converter's outputs as one set: a run replaces all of them or none, whatever stops it and wherever.

Each test converts once (the "previous" outputs), then stops a second conversion (another seed, so every
output differs) at some point, and checks that the previous outputs are exactly as they were, that no staging
folder or journal is left, and that the next run behaves as after a normal end (refuses without --overwrite).
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, Tuple

import pytest

from conftest import write_kaggle_dataset
from gluon_fashion import convert as converter
from gluon_fashion.converters import common as output_set  # the output set shared by every converter
from gluon_fashion.convert import TRAIN_JSON, convert_imaterialist
from gluon_fashion.errors import UserError
from test_convert import JSON_NAMES, TOOL, staging_leftovers

State = Tuple[Dict[str, bytes], Dict[str, int]]


def convert(root: Path, **kwargs):
    return convert_imaterialist(root, **{"val_num": 3, "num_workers": 1, "progress": False, **kwargs})


def state(root: Path) -> State:
    """Every output's bytes, and each val image's inode (a changed link is a changed output)."""
    ann = root / "annotations"
    files = {name: (ann / name).read_bytes() for name in JSON_NAMES if (ann / name).exists()}
    val = {p.name: p.stat().st_ino for p in (root / "val").iterdir()} if (root / "val").is_dir() else {}
    return files, val


@pytest.fixture
def converted(tmp_path) -> Tuple[Path, State]:
    """A dataset converted once with seed 0: (data root, its outputs)."""
    root = tmp_path / "data"
    write_kaggle_dataset(root, num_images=12, seed=4)
    convert(root)
    return root, state(root)


def fail_on_call(number: int, exception: BaseException, real: Callable) -> Callable:
    """A stand-in for ``real`` that raises ``exception`` on its ``number``-th call and works otherwise."""
    calls = {"n": 0}

    def stand_in(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == number:
            raise exception
        return real(*args, **kwargs)

    return stand_in


def write_coco_failing_on(name: str, exception: BaseException) -> Callable:
    real = converter._write_coco

    def stand_in(path, *args, **kwargs):
        if Path(path).name == name:
            raise exception
        return real(path, *args, **kwargs)

    return stand_in


# Where a second conversion is stopped: (label, how to patch the converter to stop it there).
STOPS = {
    "Ctrl-C while linking val images": lambda mp: mp.setattr(
        converter.os, "link", fail_on_call(2, KeyboardInterrupt(), os.link)),
    "Ctrl-C while writing the train JSON (after the val JSONs)": lambda mp: mp.setattr(
        converter, "_write_coco", write_coco_failing_on(TRAIN_JSON, KeyboardInterrupt())),
    "disk full while writing the report": lambda mp: mp.setattr(
        converter, "atomic_write_json", fail_on_call(1, OSError(errno.ENOSPC, "No space left on device"),
                                                     converter.atomic_write_json)),
    "a rename failing half-way through the swap": lambda mp: mp.setattr(
        output_set, "_move", fail_on_call(7, OSError(errno.EIO, "Input/output error"), output_set._move)),
}


@pytest.mark.parametrize("stop", list(STOPS))
def test_a_stopped_run_leaves_the_previous_outputs_as_they_were(converted, monkeypatch, stop):
    root, before = converted
    with monkeypatch.context() as patch:
        STOPS[stop](patch)
        with pytest.raises((KeyboardInterrupt, OSError)):
            convert(root, seed=1, overwrite=True)
    assert state(root) == before
    assert staging_leftovers(root) == []
    with pytest.raises(UserError, match="already exists; pass --overwrite"):  # as after any finished run
        convert(root, seed=1)
    assert convert(root, seed=1, overwrite=True).recovered is None
    assert state(root) != before and staging_leftovers(root) == []


def test_a_stopped_first_run_leaves_nothing_and_the_next_one_runs(tmp_path, monkeypatch):
    root = tmp_path / "data"
    write_kaggle_dataset(root, num_images=6)
    with monkeypatch.context() as patch:
        patch.setattr(converter, "_write_coco", write_coco_failing_on(TRAIN_JSON, KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            convert(root)
    assert not (root / "annotations").exists() and not (root / "val").exists()
    assert staging_leftovers(root) == []
    convert(root)  # no "pass --overwrite": nothing of the stopped run is left to refuse over
    assert state(root)[0].keys() == set(JSON_NAMES)


class Killed(BaseException):
    """Stands for SIGKILL or a power cut: nothing of the process runs after it (no rollback, no clean-up)."""


def kill_during_swap(root: Path, monkeypatch, after_moves: int) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(output_set, "_move", fail_on_call(after_moves + 1, Killed(), output_set._move))
        patch.setattr(converter._OutputSet, "_roll_back", lambda self: None)
        patch.setattr(converter._OutputSet, "discard", lambda self: None)
        with pytest.raises(Killed):
            convert(root, seed=1, overwrite=True)
    assert (root / "annotations" / ".conversion-swap").exists()  # the journal says a swap was under way


@pytest.mark.parametrize("after_moves", [0, 3, 5, 8])  # 5 outputs: moved aside (1-5), then the new ones in (6-10)
def test_a_swap_cut_short_by_a_kill_is_rolled_back_by_the_next_run(converted, monkeypatch, after_moves):
    root, before = converted
    kill_during_swap(root, monkeypatch, after_moves)
    with pytest.raises(UserError, match="already exists"):  # rolled back first, then refused as usual
        convert(root, seed=1)
    assert state(root) == before and staging_leftovers(root) == []

    kill_during_swap(root, monkeypatch, after_moves)
    result = convert(root, seed=1, overwrite=True)
    assert "put back" in result.recovered and "put back" in result.summary_table()
    assert state(root) != before and staging_leftovers(root) == []


def test_ctrl_c_during_the_swap_waits_for_it_to_finish(converted, monkeypatch):
    root, before = converted

    def interrupted_move(source, target):
        os.kill(os.getpid(), signal.SIGINT)  # held back until the swap is done
        os.replace(source, target)

    monkeypatch.setattr(output_set, "_move", interrupted_move)
    with pytest.raises(KeyboardInterrupt):
        convert(root, seed=1, overwrite=True)
    monkeypatch.undo()
    after, _ = state(root)
    assert after.keys() == set(JSON_NAMES) and after != before[0]  # the whole new set, nothing of the old
    assert b'"seed": 1' in after["conversion_report.json"] and staging_leftovers(root) == []


def test_stale_staging_folders_are_removed_by_the_next_run(converted):
    root, before = converted
    (root / ".val.conversion-new").mkdir()
    (root / ".val.conversion-new" / "half.jpg").write_bytes(b"x")
    (root / "annotations" / ".conversion-new").mkdir()
    result = convert(root, seed=1, overwrite=True)
    assert "removed the staging folders" in result.recovered and staging_leftovers(root) == []


def test_an_unwritable_annotations_folder_is_one_line_before_any_work(converted, monkeypatch):
    root, before = converted
    annotations = root / "annotations"
    if os.geteuid() == 0:  # root writes anywhere: make mkdir there fail as it would for anyone else
        real_mkdir = os.mkdir

        def refusing_mkdir(path, *args, **kwargs):
            if Path(path).parent == annotations:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", refusing_mkdir)
    monkeypatch.setattr(converter, "_convert_all", lambda *args: pytest.fail("converted before checking"))
    annotations.chmod(0o555)
    try:
        with pytest.raises(UserError) as raised:
            convert(root, seed=1, overwrite=True)
        message = str(raised.value)
        assert message == f"{annotations}: cannot write there (Permission denied); nothing was changed"
        assert state(root) == before and staging_leftovers(root) == []
        if os.geteuid() != 0:
            completed = subprocess.run([sys.executable, str(TOOL), "--data_root", str(root), "--overwrite",
                                        "--no_progress"], capture_output=True, text=True, timeout=300)
            assert completed.returncode == 2 and completed.stderr == f"error: {message}\n"
    finally:
        annotations.chmod(0o755)
    assert state(root) == before


def test_a_second_conversion_of_the_same_folder_is_refused(converted):
    fcntl = pytest.importorskip("fcntl")
    root, before = converted
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running conversion holds it
        with pytest.raises(UserError, match="another conversion is running on this folder"):
            convert(root, seed=1, overwrite=True)
    finally:
        os.close(fd)
    assert state(root) == before and staging_leftovers(root) == []


def test_overwrite_replaces_a_val_folder_of_copies_and_leaves_train_alone(converted):
    root, before = converted
    train_files = {p.name: p.read_bytes() for p in (root / "train").iterdir()}
    convert(root, seed=2, overwrite=True, copy_val=True)
    files, val = state(root)
    assert all(os.stat(root / "val" / name).st_ino != os.stat(root / "train" / name).st_ino for name in val)
    assert {p.name: p.read_bytes() for p in (root / "train").iterdir()} == train_files
    shutil.rmtree(root / "val")  # a missing val/ is rebuilt like any other output
    convert(root, seed=2, overwrite=True)
    assert state(root)[0] == files
