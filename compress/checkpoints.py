"""Safe checkpoint I/O.

Checkpoints are untrusted: `.pt/.pth/.pth.tar` load with `torch.load(weights_only=True)`,
and plain `.pkl` pickles of numpy arrays (detectron2's model zoo) with a restricted unpickler
that admits numpy arrays and plain containers only; a pickle that needs any other code is
refused unless the caller passes `trust=True` (`--trust-checkpoint`). Our own models are
`.safetensors` files whose metadata carries the family, the config and a structure spec
(channel counts changed by pruning), so pruned models reload without pickling whole modules.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from compress.errors import CompressError

TRUST_HINT = "pass --trust-checkpoint (trust=True) only if you trust its origin"


def load_raw(path: str | Path, trust: bool = False) -> dict[str, Any]:
    """Load a checkpoint file as a (nested) dict of tensors, safely."""
    path = Path(path)
    if not path.is_file():
        raise CompressError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CompressError(f"{path}: corrupt or truncated safetensors file ({exc})") from None
    if path.suffix == ".pkl" and not _is_torch_save(path):
        return load_numpy_pickle(path, trust)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc) and "weights_only" not in str(exc):
            raise CompressError(f"{path}: corrupt or truncated checkpoint ({_first_line(exc)})") from None
        if not trust:
            raise CompressError(
                f"{path}: this checkpoint needs pickled code to load ({_first_line(exc)}); "
                f"refusing an untrusted pickle: {TRUST_HINT}"
            ) from None
        obj = torch.load(str(path), map_location="cpu", weights_only=False)  # explicit trust flag given
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CompressError(f"{path}: corrupt or truncated checkpoint ({_first_line(exc)})") from None
    if not isinstance(obj, dict):
        raise CompressError(f"{path}: expected a dict of tensors or state dicts, got {type(obj).__name__}")
    return obj


# -- plain pickles of numpy arrays (detectron2 `.pkl`, Python 2 ones included) --------------
class _RefusedGlobal(pickle.UnpicklingError):
    pass


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles written by Python 3 store bytes as `_codecs.encode(text, "latin1")`;
    # other codecs (zlib, base64, rot13, ...) are never needed for arrays, so they are refused.
    if encoding != "latin1":
        raise _RefusedGlobal(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


# numpy >= 2 pickles name numpy._core, older ones numpy.core; both resolve to the installed numpy.
_NUMPY_CORE = getattr(np, "_core", None) or np.core
# The only globals a pickle of numpy arrays in dicts, lists and tuples refers to, in any protocol.
_ADMITTED_GLOBALS: dict[tuple[str, str], Any] = {
    **{
        (f"{core}.{module}", name): getattr(getattr(_NUMPY_CORE, module), name)
        for core in ("numpy.core", "numpy._core")
        for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))
    },
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "bytes"): bytes,  # protocol 2's empty bytes
    ("_codecs", "encode"): _latin1_encode,
}


class _NumpyUnpickler(pickle.Unpickler):
    """Builds numpy arrays, numpy scalars and plain containers; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ADMITTED_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None


def load_numpy_pickle(path: str | Path, trust: bool = False) -> dict[str, Any]:
    """A plain pickle of numpy arrays (detectron2's `model_final_*.pkl`: {"model": {name: ndarray},
    "__author__": ...}) as a dict whose numeric arrays are tensors. Strings are read as latin1, as
    detectron2 reads them, so Python 2 pickles load too."""
    path = Path(path)
    with path.open("rb") as f:
        try:
            obj = (pickle.Unpickler if trust else _NumpyUnpickler)(f, encoding="latin1").load()
        except _RefusedGlobal as exc:
            raise CompressError(
                f"{path}: this pickle needs code beyond numpy arrays and plain containers to load "
                f"(it refers to {exc}); refusing an untrusted pickle: {TRUST_HINT}"
            ) from None
        except Exception as exc:  # a malformed pickle fails in almost any way (memo, stack, struct errors)
            raise CompressError(f"{path}: corrupt or truncated pickle ({_first_line(exc)})") from None
    if not isinstance(obj, dict):
        raise CompressError(f"{path}: expected a dict of arrays, got {type(obj).__name__}")
    return _arrays_to_tensors(obj)


def _arrays_to_tensors(obj: Any) -> Any:
    """Numeric numpy arrays (at any depth of dicts, lists, tuples) as tensors; anything else unchanged."""
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "biufc":
        # torch needs native byte order and a writable buffer (arrays unpickled from bytes are read-only).
        return torch.from_numpy(np.require(obj, obj.dtype.newbyteorder("="), ["C", "W"]))
    if isinstance(obj, dict):
        return {k: _arrays_to_tensors(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(_arrays_to_tensors(v) for v in obj)
    return obj


# torch.save's legacy (non-zip) format opens with this pickled magic number.
_LEGACY_TORCH_MAGIC = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)


def _is_torch_save(path: Path) -> bool:
    """A file torch.save wrote (zip or legacy format), whatever its name: it goes to torch.load."""
    with path.open("rb") as f:
        if zipfile.is_zipfile(f):
            return True
        f.seek(0)
        return f.read(len(_LEGACY_TORCH_MAGIC)) == _LEGACY_TORCH_MAGIC


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str = "") -> None:
    """load_state_dict(strict) with an error that lists the key and shape diff (first 10 each)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        lines = [f"{path}: checkpoint does not fit the {what or 'model'} architecture"]
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if items:
                more = f" (and {len(items) - 10} more)" if len(items) > 10 else ""
                lines.append(f"  {label} ({len(items)}): " + ", ".join(items[:10]) + more)
        lines.append("  check the family and config (--family, teacher.config) match the checkpoint")
        raise CompressError("\n".join(lines))
    model.load_state_dict(state, strict=True)


# -- structure spec: channel counts that differ from the config-built model -----------------
def structure_spec(model: nn.Module) -> dict[str, dict[str, int]]:
    """Channel-defining attributes of every resizable layer (what pruning changes).

    Convolutions (transposed too), batch and instance norms of any dimension (1-D, 2-D, 3-D)
    share their attributes, so their nn base classes cover them all.
    """
    spec: dict[str, dict[str, int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            spec[name] = {"in_channels": m.in_channels, "out_channels": m.out_channels, "groups": m.groups}
        elif isinstance(m, nn.Linear):
            spec[name] = {"in_features": m.in_features, "out_features": m.out_features}
        elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
            spec[name] = {"num_features": m.num_features}
        elif isinstance(m, nn.GroupNorm):
            spec[name] = {"num_channels": m.num_channels, "num_groups": m.num_groups}
    return spec


def apply_structure(model: nn.Module, spec: dict[str, dict[str, int]], state: dict[str, torch.Tensor]) -> None:
    """Resize layers of a freshly built model to `spec`; weights come from `state` afterwards.

    Layers keep the model's dtypes: a file stored in float16 (a committed demo teacher) loads into
    a float32 model."""
    modules = dict(model.named_modules())
    for name, attrs in spec.items():
        m = modules.get(name)
        if m is None:
            raise CompressError(f"structure spec names module {name!r}, which the model does not have")
        for key, value in attrs.items():
            setattr(m, key, value)
        prefix = f"{name}." if name else ""
        for pname, param in list(m.named_parameters(recurse=False)):
            m._parameters[pname] = nn.Parameter(
                torch.empty_like(state.get(prefix + pname, param), dtype=param.dtype), requires_grad=param.requires_grad
            )
        for bname, buf in list(m.named_buffers(recurse=False)):
            if buf is not None and prefix + bname in state:
                m._buffers[bname] = torch.empty_like(state[prefix + bname], dtype=buf.dtype)


def save_model(
    path: str | Path,
    model: nn.Module,
    *,
    family: str,
    kind: str,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a model as safetensors + metadata (family, kind, config, structure), atomically."""
    path = Path(path)
    meta = {
        "compress": json.dumps(
            {"family": family, "kind": kind, "config": config, "structure": structure_spec(model), "extra": extra or {}}
        )
    }
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def read_model_meta(path: str | Path) -> dict[str, Any] | None:
    """The metadata of one of our .safetensors models, or None for other files."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CompressError(f"{path}: corrupt or truncated safetensors file ({exc})") from None
    return json.loads(meta["compress"]) if "compress" in meta else None


def portable(path: Path) -> str:
    """`path` relative to the working directory when under it (a repository path), else its file name.
    A path through a symbolic link keeps the link's name (`recipes/...`, not `compress/recipes/...`):
    it is the command as typed that must rerun."""
    typed, cwd = Path(os.path.abspath(path)), Path(os.getcwd())
    for candidate, base in ((typed, cwd), (typed.resolve(), cwd.resolve())):
        try:
            return candidate.relative_to(base).as_posix()
        except ValueError:
            continue
    return Path(path).name


class atomic_path:
    """Context manager yielding a temporary sibling path that is renamed onto `path` on success.

    A failure (or Ctrl-C) inside the block removes the temporary and leaves `path` untouched.
    Works for files and folders.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        os.unlink(name)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.tmp is not None
        if exc_type is None and self.tmp.exists():
            if self.path.is_dir() and not self.path.is_symlink():
                old = self.path.with_name(f".{self.path.name}.old")
                _remove(old)
                os.replace(self.path, old)
                os.replace(self.tmp, self.path)
                _remove(old)
            else:
                os.replace(self.tmp, self.path)
        else:
            _remove(self.tmp)


def _remove(p: Path) -> None:
    import shutil

    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()
