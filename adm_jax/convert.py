"""Reference (PyTorch) checkpoints → Flax params, and `python -m adm_jax.convert`.

The Flax modules mirror the reference's state-dict names ('.' → '_' between a name and
its indices), so each Flax leaf has exactly one torch tensor:
  ('input_blocks_3_0', 'in_layers_2', 'kernel')  ←  'input_blocks.3.0.in_layers.2.weight'
Layouts: Conv2d OIHW → HWIO; Linear (out, in) and 1x1 Conv1d (out, in, 1) → (in, out);
GroupNorm weight → scale; attention-pool positional embedding (C, T) → (T, C).

  python -m adm_jax.convert --checkpoint 256x256_diffusion.pt --config 256x256_diffusion --out DIR
writes an orbax checkpoint of {'params'} plus `adm_jax_model.json` (kind and flags) that
`load_converted(DIR)` and `--mode=sample` (sample.checkpoint_path=DIR) read.
"""

import argparse
import json
import os
import re
from typing import Any, Dict, Mapping, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from adm_jax import models
from adm_jax import networks

KINDS = networks.KINDS
META_FILE = "adm_jax_model.json"
_INDEXED = re.compile(r"^(.*?)((?:_\d+)+)$")


def torch_key(path: Tuple[str, ...]) -> str:
  """The reference's state-dict key of a Flax param path."""
  parts = []
  for name in path[:-1]:
    match = _INDEXED.match(name)
    if match:
      parts.append(match.group(1))
      parts.extend(match.group(2).strip("_").split("_"))
    else:
      parts.append(name)
  leaf = path[-1]
  parts.append({"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(leaf, leaf))
  return ".".join(parts)


def _to_flax(name: str, tensor: np.ndarray, shape: Tuple[int, ...], leaf: str) -> np.ndarray:
  """Rearranges one torch tensor into the Flax layout of `shape`, or raises."""
  t = np.asarray(tensor, dtype=np.float32)
  if leaf == "kernel" and t.ndim == 4:
    t = t.transpose(2, 3, 1, 0)  # OIHW -> HWIO
  elif leaf == "kernel" and t.ndim == 3 and t.shape[-1] == 1:
    t = t[:, :, 0].T  # Conv1d (out, in, 1) -> Dense (in, out)
  elif leaf == "kernel" and t.ndim == 2:
    t = t.T
  elif leaf == "positional_embedding":
    t = t.T
  if t.shape != tuple(shape):
    raise ValueError(
      f"tensor {name!r}: checkpoint shape {tuple(tensor.shape)} does not fit "
      f"the configured network (needs {tuple(shape)} in Flax layout)"
    )
  return t


def state_dict_to_params(state_dict: Mapping[str, Any], abstract_params) -> Dict:
  """Fills a Flax param tree (from jax.eval_shape of init) from a reference state dict."""
  used = set()
  flat, treedef = jax.tree_util.tree_flatten_with_path(abstract_params)
  leaves = []
  for path, spec in flat:
    names = tuple(getattr(k, "key", getattr(k, "name", str(k))) for k in path)
    key = torch_key(names)
    if key not in state_dict:
      raise ValueError(
        f"tensor {key!r} (Flax {'/'.join(names)}) is missing from the checkpoint; "
        "is the config right for this checkpoint?"
      )
    leaves.append(_to_flax(key, _numpy(state_dict[key]), spec.shape, names[-1]))
    used.add(key)
  extra = sorted(k for k in state_dict if k not in used)
  if extra:
    raise ValueError(
      f"checkpoint tensor {extra[0]!r} (and {len(extra) - 1} more) has no place in "
      "the configured network; is the config right for this checkpoint?"
    )
  return jax.tree_util.tree_unflatten(treedef, leaves)


def _numpy(value):
  if hasattr(value, "detach"):  # torch.Tensor
    return value.detach().cpu().float().numpy()
  return np.asarray(value)


def load_state_dict(path: str) -> Dict[str, np.ndarray]:
  """A reference checkpoint as {name: array}: `.pt` (needs torch) or `.npz` of the same tensors."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint {path} not found")
  if path.endswith(".npz"):
    with np.load(path) as data:
      return {k: data[k] for k in data.files}
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(
      f"reading {path} needs torch (pip install torch); or convert it to .npz "
      "with numpy.savez(**state_dict) on a machine that has torch"
    ) from None
  state = torch.load(path, map_location="cpu", weights_only=True)
  if (
    isinstance(state, dict)
    and "state_dict" in state
    and not any(hasattr(v, "shape") for v in state.values())
  ):
    state = state["state_dict"]
  return {k: _numpy(v) for k, v in state.items()}


def convert(checkpoint: str, flags: Mapping[str, Any], kind: str):
  """(module, params) of a reference checkpoint for a network described by `flags`."""
  network = networks.from_flags(kind, flags)
  params = state_dict_to_params(load_state_dict(checkpoint), network.abstract_params())
  return network.module, jax.tree.map(jnp.asarray, params)


def resolve_config(spec: str, kind: str) -> Dict[str, Any]:
  """Flags from a released name, a fixture config.json (its section), or a JSON of flags."""
  if not spec.endswith(".json"):
    return models.released_config(spec)
  with open(spec) as f:
    raw = json.load(f)
  if "model" in raw and isinstance(raw["model"], dict):  # a fixture / harness config.json
    if kind == "classifier":
      flags = dict(raw["classifier"])
      flags.setdefault("image_size", raw["model"]["image_size"])
      return flags
    if kind == "sr":
      return dict(raw["super_res"])
    return dict(raw["model"])
  return raw


def save_converted(out_dir: str, params, kind: str, flags: Mapping[str, Any]) -> None:
  out_dir = os.path.abspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(os.path.join(out_dir, "params"), {"params": params}, force=True)
  with open(os.path.join(out_dir, META_FILE), "w") as f:
    json.dump({"kind": kind, "flags": dict(flags)}, f, indent=2)


def is_converted_checkpoint(path: str) -> bool:
  return bool(path) and os.path.exists(os.path.join(path, META_FILE))


def load_converted(path: str):
  """(flags dict, params) of a checkpoint written by `python -m adm_jax.convert`."""
  path = os.path.abspath(path)
  if not is_converted_checkpoint(path):
    raise FileNotFoundError(f"{path} is not a converted checkpoint (no {META_FILE})")
  with open(os.path.join(path, META_FILE)) as f:
    meta = json.load(f)
  abstract = networks.from_flags(meta["kind"], meta["flags"]).abstract_params()
  with ocp.StandardCheckpointer() as ckpt:
    restored = ckpt.restore(os.path.join(path, "params"), {"params": abstract})
  flags = dict(meta["flags"])
  flags["_kind"] = meta["kind"]
  return flags, restored["params"]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--checkpoint", required=True, help="reference .pt or .npz state dict")
  parser.add_argument(
    "--config",
    required=True,
    help="released name (e.g. 256x256_diffusion), a config.json or a JSON of flags",
  )
  parser.add_argument(
    "--kind",
    choices=KINDS,
    default=None,
    help="network kind (default: from the released name, else unet)",
  )
  parser.add_argument("--out", required=True, help="output directory")
  args = parser.parse_args(argv)
  kind = args.kind or (
    models.released_kind(args.config) if not args.config.endswith(".json") else "unet"
  )
  flags = resolve_config(args.config, kind)
  _, params = convert(args.checkpoint, flags, kind)
  save_converted(args.out, params, kind, flags)
  n = sum(x.size for x in jax.tree.leaves(params))
  print(f"converted {args.checkpoint} ({kind}, {n / 1e6:.2f}M parameters) -> {args.out}")


if __name__ == "__main__":
  main()
