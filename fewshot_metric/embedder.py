"""Embedder: a trained checkpoint as a function from images to np.float32 embeddings [N, D]."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from fewshot_metric.backbones.inference import fold_batch_norm
from fewshot_metric.data import build_transform
from fewshot_metric.data.base import open_image
from fewshot_metric.data.png import decode_plain_png, decode_plain_png_files
from fewshot_metric.model import FewShotModel
from fewshot_metric.training.checkpoint import load_model
from fewshot_metric.training.distributed import pick_device

ImageInput = str | Path | Image.Image
DECODE_BYTES = 16 << 20  # most uint8 pixels decoded per step of a batched embed


class Embedder:
    """Checkpoint -> preprocessing + backbone. `embed(images)` -> np.float32 [N, D].
    `device`: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N". `model` is the model as
    loaded (its weights make the fingerprint); `embed` runs `backbone`, its inference copy
    with batch norm folded into the convolutions (`fold_batch_norm`: the same outputs up to
    float rounding, faster)."""

    def __init__(self, model: FewShotModel, meta: dict[str, Any], source: str = "<memory>",
                 device: str | None = None):
        self.device = pick_device(device)
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)
        self.backbone = fold_batch_norm(self.model.backbone).to(
            self.device, memory_format=torch.channels_last)
        self.meta = meta
        self.source = source
        self.transform = build_transform(model.backbone.input_config)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = None) -> Embedder:
        model, meta = load_model(path)
        return cls(model, meta, str(path), device)

    @property
    def dim(self) -> int:
        return self.model.backbone.embed_dim

    @property
    def metric(self) -> str:
        """The metric the model was trained with: "sqeuclidean" or "cosine"."""
        return self.model.distance.name

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over the weights, computed once (an Embedder serves frozen weights):
        identifies the model a store was built with."""
        digest = hashlib.sha256()
        for key, value in sorted(self.model.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def decode(self, image: ImageInput) -> torch.Tensor:
        """A path or PIL image -> uint8 [C, H, W], converted and resized: the per-image half
        of preprocessing (`transform.normalize` of a stacked batch is the other). Plain PNG
        files skip PIL's decoder (`decode_plain_png`: same pixels, a few times faster)."""
        if not isinstance(image, Image.Image):
            source = str(image)
            try:
                data = Path(image).read_bytes()
            except OSError:  # missing, a folder, unreadable: open_image raises and says which
                return self.transform.to_uint8(open_image(image, source))
            pixels = decode_plain_png(data, self.transform.channels)
            image = pixels if pixels is not None else open_image(data, source)
        return self.transform.to_uint8(image)

    def preprocess(self, image: ImageInput) -> torch.Tensor:
        """A path or PIL image -> tensor [C, H, W] exactly as in training."""
        return self.transform.normalize(self.decode(image))

    def decode_many(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Paths or PIL images -> uint8 [N, C, H, W], as `decode` gives them one by one: plain
        PNG files already at the model's size are read and decoded together, on torch's
        threads without the GIL (`decode_plain_png_files`), the rest by `decode`."""
        files = [i for i, image in enumerate(images) if not isinstance(image, Image.Image)]
        pixels, decoded = decode_plain_png_files(
            [images[i] for i in files], self.transform.channels, self.transform.size,
            torch.get_num_threads())
        if len(files) == len(images) and decoded.all():
            return pixels
        batch = torch.empty((len(images), *pixels.shape[1:]), dtype=torch.uint8)
        decoded = torch.from_numpy(decoded)
        done = torch.as_tensor(files, dtype=torch.int64)[decoded]
        batch[done] = pixels[decoded]
        for i in np.setdiff1d(np.arange(len(images)), done).tolist():
            batch[i] = self.decode(images[i])
        return batch

    def _decode_steps(self, n: int, batch_size: int) -> Iterator[slice]:
        """Slices of range(n) to decode at a time: as many whole batches as fit in
        DECODE_BYTES of pixels (at least one). Batch decoding runs on the cores the forward
        uses, and each switch between the two costs about 1 ms on this project's 2-core
        machine (torch's OpenMP threads spin a while after a forward), so few long steps
        beat many short ones: 2,048 28x28 PNGs through Conv-4 ran at 0.82-0.86 of the bare
        forward decoded in one step, 0.79-0.81 in steps of 128, 256, 512, ... images."""
        image_bytes = self.transform.channels * self.transform.size[0] * self.transform.size[1]
        step = max(1, DECODE_BYTES // image_bytes // batch_size) * batch_size
        return (slice(start, min(n, start + step)) for start in range(0, n, step))

    def _batches(self, images: Sequence[ImageInput], batch_size: int
                 ) -> Iterator[torch.Tensor]:
        """Normalised batches [B, C, H, W] of `images`, decoded (`decode_many`) a step
        (`_decode_steps`) ahead in a worker thread, so decoding overlaps the caller's
        compute."""
        steps = self._decode_steps(len(images), batch_size)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
            ahead = [pool.submit(self.decode_many, images[step]) for step in islice(steps, 1)]
            while ahead:
                pixels = ahead.pop().result()
                ahead = [pool.submit(self.decode_many, images[step]) for step in islice(steps, 1)]
                for start in range(0, len(pixels), batch_size):
                    yield self.transform.normalize(pixels[start:start + batch_size])

    @torch.no_grad()
    def embed(self, images: Sequence[ImageInput] | torch.Tensor, batch_size: int = 64,
              progress: bool = False) -> np.ndarray:
        """Paths, PIL images, or preprocessed tensors [N, C, H, W] -> np.float32 [N, D]."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if isinstance(images, torch.Tensor):
            images = images.unsqueeze(0) if images.dim() == 3 else images
            batches = (images[start:start + batch_size]
                       for start in range(0, len(images), batch_size))
        else:
            batches = self._batches(images, batch_size)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        start = 0
        with tqdm(total=len(images), desc="embed", unit="img", disable=not progress,
                  leave=False) as bar:
            for batch in batches:
                batch = batch.to(self.device, torch.float32).contiguous(
                    memory_format=torch.channels_last)
                out[start:start + len(batch)] = self.backbone(batch).cpu().numpy()
                start += len(batch)
                bar.update(len(batch))
        return out
