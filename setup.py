"""Builds the package's optional C extensions, loaded with ctypes (fewshot_metric/native.py):
the exact flat-search kernel (fewshot_metric/store/flat_topk.c) and the plain-PNG batch
decoder (fewshot_metric/data/png_decode.c, needs libpng's headers); everything else is in
pyproject.toml. Without a C compiler or libpng the install still succeeds: FAISS serves exact
search and PIL decodes PNG files."""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("fewshot_metric.store._flat_topk", sources=["fewshot_metric/store/flat_topk.c"],
              extra_compile_args=["-O3"], optional=True),
    Extension("fewshot_metric.data._png_decode", sources=["fewshot_metric/data/png_decode.c"],
              libraries=["png", "z"], extra_compile_args=["-O2"], optional=True),
])
