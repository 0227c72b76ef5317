"""The OpenMP thread default: physical cores from /proc/cpuinfo, never overriding the user's setting."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gluon_fashion import cpu_threads

HYPERTHREADED = "".join(
    f"processor\t: {cpu}\nphysical id\t: 0\ncore id\t\t: {cpu % 2}\n\n" for cpu in range(4))  # 2 cores x 2
NO_TOPOLOGY = "".join(f"processor\t: {cpu}\nmodel name\t: Xeon\n\n" for cpu in range(3))


def _cpuinfo(tmp_path, text):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return str(path)


def test_hyperthreads_of_one_core_count_once(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert cpu_threads.physical_cores(_cpuinfo(tmp_path, HYPERTHREADED)) == 2


def test_only_cpus_the_process_may_use_count(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2})  # both threads of core 0
    assert cpu_threads.physical_cores(_cpuinfo(tmp_path, HYPERTHREADED)) == 1


def test_without_topology_fields_each_cpu_is_a_core(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert cpu_threads.physical_cores(_cpuinfo(tmp_path, NO_TOPOLOGY)) == 3


def test_unreadable_cpuinfo_gives_none(tmp_path):
    assert cpu_threads.physical_cores(str(tmp_path / "missing")) is None


def test_user_setting_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert cpu_threads.set_default_omp_threads() is None
    assert os.environ["OMP_NUM_THREADS"] == "7"


def test_default_is_set_before_mxnet_loads():
    if cpu_threads.physical_cores() is None:
        pytest.skip("no /proc/cpuinfo on this machine")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    code = "import gluon_fashion, os, mxnet; print(os.environ['OMP_NUM_THREADS'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == str(cpu_threads.physical_cores())
