"""Convert torchvision's published VGG19 ImageNet weights into the `.npz` that RL-SRGAN's VGG loss reads
(`jaxcomp.methods.rl_srgan.vgg.load_vgg19_params`; Savioli eq. 3).

    python -m jaxcomp.methods.rl_srgan.convert_vgg19 SRC DST.npz

SRC is one of
- torchvision's `vgg19` checkpoint `vgg19-dcbb9e9d.pth` (the `VGG19_Weights.IMAGENET1K_V1` weights: download it
  yourself from https://download.pytorch.org/models/vgg19-dcbb9e9d.pth, or take it from the torch hub cache,
  `~/.cache/torch/hub/checkpoints/`, after `torchvision.models.vgg19(weights="IMAGENET1K_V1")` on a machine with
  network access). Reading a `.pth` needs PyTorch (`torch.load(..., map_location="cpu", weights_only=True)`).
- an `.npz` holding the same state_dict keys and arrays (`features.{idx}.weight` [out, in, 3, 3],
  `features.{idx}.bias` [out]), e.g. written elsewhere with
  `numpy.savez("vgg19_sd.npz", **{k: v.numpy() for k, v in torch.load(pth).items()})`, for machines without torch.

The 16 convolutions are `features.{0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34}` (the other indices
are ReLU and max-pool layers), i.e. conv1_1 ... conv5_4; kernels go from PyTorch's OIHW to HWIO (both frameworks
compute a cross-correlation, so there is no flip). The classifier (`classifier.*`) is not needed and is dropped.
DST gets `conv{b}_{i}/kernel` and `conv{b}_{i}/bias` in float32, written atomically, and is checked by loading it back.

Keras' `vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5` (keras.applications) is not accepted: reading HDF5 needs
h5py, which this project does not install, and those Caffe-derived weights expect BGR input in [0, 255] minus the
mean pixel, not the torchvision normalisation that `vgg.VGG19` applies, so they would give wrong features.

Errors (missing file, missing torch, wrong layout: the first missing or mis-shaped key) are one line on stderr,
exit status 2.
"""

from __future__ import annotations

import io
import os
import sys
import zipfile
from typing import Mapping, Sequence

import numpy as np

from jaxcomp import io_utils
from jaxcomp.errors import ConfigError, DataError, JaxcompError
from jaxcomp.methods.rl_srgan import vgg

TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
"""Indices of VGG19's conv layers in torchvision's `features` Sequential, in order conv1_1 ... conv5_4."""

USAGE = "usage: python -m jaxcomp.methods.rl_srgan.convert_vgg19 SRC(.pth|.npz) DST.npz"


def _load_state_dict(src: str) -> Mapping[str, np.ndarray]:
  """The checkpoint's `features.*` arrays as numpy, from a `.pth` (needs torch) or an `.npz` state dict."""
  if not os.path.isfile(src):
    raise DataError(f"VGG19 checkpoint {src} not found")
  ext = os.path.splitext(src)[1].lower()
  if ext in (".h5", ".hdf5", ".keras"):
    raise DataError(f"{src}: Keras VGG19 weights are not supported (they need h5py and Caffe BGR preprocessing); "
                    "use torchvision's vgg19-dcbb9e9d.pth")
  if ext in (".pth", ".pt"):
    try:
      import torch
    except ImportError:
      raise DataError(f"{src}: reading a .pth needs PyTorch, which is not installed; convert its state_dict to .npz "
                      "elsewhere (see `--help`)") from None
    try:
      sd = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or non-weights files
      raise DataError(f"{src}: torch.load failed ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(sd, Mapping):
      raise DataError(f"{src}: expected a state_dict (a mapping of names to tensors), got {type(sd).__name__}")
    return {k: v.detach().cpu().numpy() for k, v in sd.items() if k.startswith("features.") and hasattr(v, "numpy")}
  if ext == ".npz":
    try:
      with np.load(src, allow_pickle=False) as f:
        return {k: f[k] for k in f.files if k.startswith("features.")}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
      raise DataError(f"{src} is not a readable .npz ({' '.join(str(e).split())})") from None
  raise DataError(f"{src}: unknown checkpoint type {ext or '(no extension)'!r}; expected torchvision's .pth or an "
                  ".npz of its state_dict")


def convert_state_dict(sd: Mapping[str, np.ndarray], src: str = "state_dict") -> dict[str, np.ndarray]:
  """torchvision `vgg19` state_dict arrays -> {"conv1_1/kernel": HWIO float32, "conv1_1/bias": ..., ...}."""
  out = {}
  for idx, (name, (c_in, c_out)) in zip(TORCHVISION_CONV_INDICES, vgg.LAYER_SHAPES.items()):
    for leaf, shape in (("weight", (c_out, c_in, 3, 3)), ("bias", (c_out,))):
      key = f"features.{idx}.{leaf}"
      if key not in sd:
        raise DataError(f"{src} lacks key {key!r} (expected torchvision vgg19 layout, shape {shape})")
      a = np.asarray(sd[key])
      if a.shape != shape:
        raise DataError(f"{src}: key {key!r} has shape {a.shape}, expected {shape} (torchvision vgg19, {name})")
      if not np.issubdtype(a.dtype, np.floating):
        raise DataError(f"{src}: key {key!r} has dtype {a.dtype}, expected floating point")
    w = np.asarray(sd[f"features.{idx}.weight"], np.float32)
    out[f"{name}/kernel"] = np.ascontiguousarray(w.transpose(2, 3, 1, 0))  # OIHW -> HWIO
    out[f"{name}/bias"] = np.asarray(sd[f"features.{idx}.bias"], np.float32)
  return out


def convert(src: str | os.PathLike, dst: str | os.PathLike) -> None:
  """Reads the checkpoint `src`, writes the `.npz` `dst` atomically, and checks that it loads."""
  src, dst = os.fspath(src), os.fspath(dst)
  arrays = convert_state_dict(_load_state_dict(src), src)
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  io_utils.write_bytes_atomic(dst, buf.getvalue())
  vgg.load_vgg19_params(dst)


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry point; returns the exit status (0, or 2 with one line on stderr)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if any(a in ("-h", "--help") for a in argv):
    print(__doc__)
    return 0
  try:
    if len(argv) != 2:
      raise ConfigError(f"expected 2 arguments SRC DST.npz, got {len(argv)} ({USAGE})")
    convert(*argv)
  except (JaxcompError, OSError) as e:
    print(f"convert_vgg19: error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  print(f"wrote {argv[1]} (VGG19 conv1_1 ... conv5_4, HWIO float32)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
