"""Picks OpenBLAS kernels for FAISS before faiss is first imported (import side effect).

faiss-cpu wheels bundle their own OpenBLAS (0.3.15 in faiss-cpu 1.15.1). It does not know
recent CPUs (this project's machines: an Intel family 6, model 207, and an AMD EPYC with
AVX-512) and falls back to generic SSE3 kernels ("Prescott" on Intel, "Barcelona" on AMD),
so exact search ran at 0.16-0.19 of the machine's matrix-multiply throughput
(benchmarks/store_bench.py). OpenBLAS reads OPENBLAS_CORETYPE when it loads: this sets
SkylakeX on CPUs with AVX-512 and Haswell on CPUs with AVX2, unless the variable is already
set. Libraries loaded before keep their choice (numpy's OpenBLAS detects these CPUs itself and
picks the same kernels); `warn_if_faiss_blas_is_generic` tells a user who imported
faiss first.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path


def openblas_coretype(cpu_flags: set[str]) -> str | None:
    """The OpenBLAS core type for a CPU with these /proc/cpuinfo flags, or None."""
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= cpu_flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= cpu_flags:
        return "Haswell"
    return None


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The first CPU's flags (empty where there is no /proc/cpuinfo)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


# OpenBLAS core types with AVX2 kernels or better; any other one on an AVX2 CPU is a fallback
AVX2_CORETYPES = frozenset({"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"})


@functools.cache
def warn_if_faiss_blas_is_generic() -> bool:
    """Warns (once) when faiss's OpenBLAS runs generic kernels on a CPU with AVX2 or AVX-512,
    which happens when faiss was imported before fewshot_metric. Returns whether it warned."""
    from threadpoolctl import threadpool_info

    wanted = openblas_coretype(cpu_flags())
    generic = [(pool["filepath"], pool.get("architecture")) for pool in threadpool_info()
               if pool["internal_api"] == "openblas" and "openblaso" in pool["filepath"]
               and pool.get("architecture") not in AVX2_CORETYPES]
    if wanted is None or not generic:
        return False
    path, architecture = generic[0]
    warnings.warn(f"faiss's OpenBLAS ({Path(path).name}) runs generic SSE3 kernels "
                  f"({architecture}) on this CPU, so exact search is several times slower "
                  f"than it could be: import fewshot_metric before faiss, or set "
                  f"OPENBLAS_CORETYPE={wanted} in the environment before Python starts",
                  RuntimeWarning, stacklevel=3)
    return True


if "OPENBLAS_CORETYPE" not in os.environ and (coretype := openblas_coretype(cpu_flags())):
    os.environ["OPENBLAS_CORETYPE"] = coretype
