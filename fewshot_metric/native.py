"""The package's optional C extensions (built at install by setup.py), loaded with ctypes.

Each is a plain shared library without Python bindings: ctypes releases the GIL during a
call, so work split over threads (`split_over_threads`) runs in parallel. A missing or stale
build is not an error: the caller falls back (to FAISS, to PIL) and can say why.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

Signature = tuple[Any, list[Any]]  # (restype, argtypes) of one C function


def load_extension(module: str, functions: dict[str, Signature]
                   ) -> tuple[ctypes.CDLL | None, str | None]:
    """(the library with `functions` typed, None) or (None, why it cannot be used)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None, (f"{module} was not built (no C compiler or library headers when the "
                      f"package was installed; see setup.py, then run `pip install -e .` again)")
    try:
        library = ctypes.CDLL(spec.origin)
    except OSError as error:
        return None, f"{spec.origin} does not load: {error}"
    for name, (restype, argtypes) in functions.items():
        try:
            function = getattr(library, name)
        except AttributeError as error:  # built from another version of the C file
            return None, f"{spec.origin} is stale ({error}); run `pip install -e .` again"
        function.restype, function.argtypes = restype, argtypes
    return library, None


@functools.cache
def _thread_pool(threads: int, name: str) -> ThreadPoolExecutor:
    """A process-wide pool of `threads` threads named `name`-N, made once."""
    return ThreadPoolExecutor(threads, thread_name_prefix=name)


def split_over_threads(run: Callable[[int, int], Any], n: int, threads: int, name: str
                       ) -> list[Any]:
    """run(start, stop) over `threads` even slices of range(n) (inline when threads is 1),
    in a pool named `name`; their results in order."""
    if threads <= 1:
        return [run(0, n)]
    cuts = np.linspace(0, n, threads + 1).astype(int).tolist()
    return list(_thread_pool(threads, name).map(run, cuts[:-1], cuts[1:]))

