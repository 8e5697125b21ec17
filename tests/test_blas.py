"""FAISS's bundled OpenBLAS gets fast kernels on CPUs it does not recognise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fewshot_metric.blas import cpu_flags, openblas_coretype

PROBE = """
import json
from fewshot_metric.store import PrototypeStore
from threadpoolctl import threadpool_info
print(json.dumps([pool.get("architecture") for pool in threadpool_info()
                  if pool["internal_api"] == "openblas" and "openblaso" in pool["filepath"]]))
"""


def test_core_type_from_cpu_flags(tmp_path: Path) -> None:
    avx512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma"}
    assert openblas_coretype(avx512) == "SkylakeX"
    assert openblas_coretype({"avx2", "fma", "sse4_2"}) == "Haswell"
    assert openblas_coretype({"avx512f", "avx2"}) is None  # no fma: leave OpenBLAS to decide
    assert openblas_coretype({"sse2"}) is None
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\nprocessor\t: 1\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse2", "avx2", "fma"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_faiss_blas_runs_the_kernels_this_cpu_supports() -> None:
    """In a fresh process, as a user imports the store (OPENBLAS_CORETYPE not set)."""
    env = {key: value for key, value in os.environ.items()
           if key != "OPENBLAS_CORETYPE"}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env=env, check=True)
    architectures = json.loads(done.stdout.splitlines()[-1])
    assert architectures, "faiss-cpu's bundled OpenBLAS was not found"
    wanted = openblas_coretype(cpu_flags())
    if wanted is not None:
        assert set(architectures) == {wanted}


WARN_PROBE = """
import warnings
{first}
from fewshot_metric.store import PrototypeStore
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    PrototypeStore(4)
    PrototypeStore(4)
print(sum("runs generic SSE3 kernels" in str(w.message) for w in caught))
"""


def test_a_store_warns_once_when_faiss_was_imported_first() -> None:
    env = {key: value for key, value in os.environ.items() if key != "OPENBLAS_CORETYPE"}
    counts = {}
    for first in ("import faiss", "import fewshot_metric"):
        done = subprocess.run([sys.executable, "-c", WARN_PROBE.format(first=first)],
                              capture_output=True, text=True, env=env, check=True)
        counts[first] = int(done.stdout.splitlines()[-1])
    expected = 1 if openblas_coretype(cpu_flags()) is not None else 0
    assert counts == {"import faiss": expected, "import fewshot_metric": 0}
