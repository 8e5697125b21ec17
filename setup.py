"""Builds the optional C kernel of exact flat search (fewshot_metric/store/flat_topk.c, loaded
with ctypes by fewshot_metric/store/flat_kernel.py); everything else is in pyproject.toml.
Without a C compiler the install still succeeds and FAISS serves exact search."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("fewshot_metric.store._flat_topk",
                             sources=["fewshot_metric/store/flat_topk.c"],
                             extra_compile_args=["-O3"], optional=True)])
