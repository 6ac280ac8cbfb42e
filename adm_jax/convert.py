"""Reference (PyTorch) checkpoints -> Flax params, and `python -m adm_jax.convert`.

The Flax modules are named after the reference's state-dict entries ('.' -> '_' before
indices), so every Flax leaf has exactly one torch tensor:
  ('input_blocks_3_0', 'in_layers_2', 'kernel')  <-  'input_blocks.3.0.in_layers.2.weight'
Layouts: Conv2d OIHW -> HWIO; Linear (out, in) and kernel-1 Conv1d (out, in, 1) -> (in, out);
GroupNorm weight -> scale; Embedding weight -> embedding; attention-pool positional
embedding (C, T) -> (T, C).

  python -m adm_jax.convert --checkpoint 256x256_diffusion.pt --config 256x256_diffusion --out DIR

writes an orbax checkpoint `DIR/params` of {'params': ...} and `DIR/adm_jax_model.json`
(kind and flags); `load_converted(DIR)` returns (flags, params), and the sample mode
reads it with sample.checkpoint_path=DIR.
"""
from adm_jax import xla_env  # noqa: F401  (XLA flags before jax starts)

import argparse
import json
import os
import re
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from adm_jax import models

KINDS = ("unet", "classifier", "sr")
META_FILE = "adm_jax_model.json"
_INDEXED_NAME = re.compile(r"^(.*?)((?:_\d+)+)$")
_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "embedding": "weight"}


def torch_key(path: Sequence[str]) -> str:
  """The reference's state-dict key of a Flax param path."""
  parts = []
  for name in path[:-1]:
    match = _INDEXED_NAME.match(name)
    if match:
      parts.append(match.group(1))
      parts.extend(match.group(2).strip("_").split("_"))
    else:
      parts.append(name)
  parts.append(_LEAF_NAMES.get(path[-1], path[-1]))
  return ".".join(parts)


def to_flax_layout(tensor: np.ndarray, leaf: str) -> np.ndarray:
  """One torch tensor rearranged into the Flax layout of a leaf called `leaf`."""
  array = np.asarray(tensor, dtype=np.float32)
  if leaf == "kernel" and array.ndim == 4:
    return array.transpose(2, 3, 1, 0)  # Conv2d OIHW -> HWIO
  if leaf == "kernel" and array.ndim == 3 and array.shape[-1] == 1:
    return array[:, :, 0].T  # Conv1d (out, in, 1) -> Dense (in, out)
  if (leaf == "kernel" and array.ndim == 2) or leaf == "positional_embedding":
    return array.T
  return array


def state_dict_to_params(state_dict: Mapping[str, Any], abstract_params) -> Dict:
  """Fills a Flax param tree (shaped like `abstract_params`) from a reference state dict.

  Raises:
    ValueError: naming the first tensor (in the checkpoint's order) that is missing,
      has the wrong shape, or has no place in the network, and how many more do.
  """
  order = {name: i for i, name in enumerate(state_dict)}
  flat, treedef = jax.tree_util.tree_flatten_with_path(abstract_params)
  leaves, problems, used = [], [], set()
  for path, spec in flat:
    names = tuple(str(getattr(k, "key", k)) for k in path)
    key = torch_key(names)
    if key not in state_dict:
      problems.append((len(order), f"tensor {key!r} (Flax {'/'.join(names)}) is missing "
                                   "from the checkpoint"))
      leaves.append(None)
      continue
    used.add(key)
    array = to_flax_layout(_to_numpy(state_dict[key]), names[-1])
    if array.shape != tuple(spec.shape):
      torch_shape = tuple(np.shape(state_dict[key]))
      problems.append((order[key], f"tensor {key!r} has shape {torch_shape} in the checkpoint "
                                   f"but the configured network needs {tuple(spec.shape)} "
                                   "(Flax layout)"))
    leaves.append(array)
  for key in state_dict:
    if key not in used:
      problems.append((order[key], f"checkpoint tensor {key!r} has no place in the "
                                   "configured network"))
  if problems:
    problems.sort(key=lambda p: p[0])
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    raise ValueError(f"{problems[0][1]}{more}; does the config match this checkpoint?")
  return jax.tree_util.tree_unflatten(treedef, leaves)


def _to_numpy(value) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch.Tensor
    return value.detach().cpu().float().numpy()
  return np.asarray(value)


def load_state_dict(path: str) -> Dict[str, np.ndarray]:
  """A reference checkpoint as {name: float32 array}: `.pt` (needs torch) or `.npz`."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint {path} not found")
  if path.endswith(".npz"):
    with np.load(path) as data:
      return {k: np.asarray(data[k]) for k in data.files if k != "meta"}
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(f"reading {path} needs torch (pip install torch), or save its tensors "
                      "as .npz (numpy.savez(out, **state_dict)) where torch is installed"
                      ) from None
  state = torch.load(path, map_location="cpu", weights_only=True)
  if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
    state = state["state_dict"]
  if not isinstance(state, dict):
    raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
  return {k: _to_numpy(v) for k, v in state.items()}


def create_network(kind: str, flags: Mapping[str, Any]):
  """The Flax module of a network kind ('unet', 'sr' or 'classifier') from flags."""
  if kind not in KINDS:
    raise ValueError(f"unknown network kind {kind!r}; expected one of {KINDS}")
  if kind == "classifier":
    return models.create_classifier(flags)
  if kind == "sr":
    return models.create_sr_model(flags)
  return models.create_model(flags)


def example_inputs(module, kind: str, flags: Mapping[str, Any], batch: int = 1):
  """(args, kwargs) of a zero batch that `module.init` / `module.apply` accept."""
  size = module.image_size
  channels = module.in_channels // (2 if kind == "sr" else 1)
  args = (jnp.zeros((batch, size, size, channels)), jnp.zeros((batch,), jnp.int32))
  kwargs = {}
  if kind != "classifier" and module.num_classes is not None:
    kwargs["y"] = jnp.zeros((batch,), jnp.int32)
  if kind == "sr":
    small = int(flags.get("small_size") or 0)
    kwargs["low_res"] = jnp.zeros((batch, small, small, channels))
  return args, kwargs


def build(kind: str, flags: Mapping[str, Any]):
  """(module, abstract params): the param shapes from `jax.eval_shape` (nothing allocated)."""
  module = create_network(kind, flags)
  args, kwargs = example_inputs(module, kind, flags)
  abstract = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args, **kwargs))
  return module, abstract["params"]


def convert(checkpoint: str, flags: Mapping[str, Any], kind: str = "unet"):
  """(module, params) of a reference checkpoint for the network that `flags` describe."""
  module, abstract = build(kind, flags)
  params = state_dict_to_params(load_state_dict(checkpoint), abstract)
  return module, jax.tree.map(jnp.asarray, params)


def resolve_config(spec: str, kind: str) -> Dict[str, Any]:
  """Flags from a released name, a fixture config.json (its `kind` section) or a JSON of flags."""
  if not spec.endswith(".json"):
    return models.released_config(spec)
  with open(spec) as f:
    raw = json.load(f)
  if isinstance(raw.get("model"), dict):  # a fixture / reference-harness config.json
    if kind == "classifier":
      return dict(raw["classifier"], image_size=raw["classifier"].get(
          "image_size", raw["model"]["image_size"]))
    return dict(raw["super_res"] if kind == "sr" else raw["model"])
  return dict(raw)


def save_converted(out_dir: str, params, kind: str, flags: Mapping[str, Any]) -> None:
  """Writes `out_dir/params` (orbax, {'params': ...}) and `out_dir/adm_jax_model.json`."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  out_dir = os.path.abspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.join(out_dir, "params"), {"params": params}, force=True)
  with open(os.path.join(out_dir, META_FILE), "w") as f:
    json.dump({"kind": kind, "flags": dict(flags)}, f, indent=2)


def is_converted_checkpoint(path: str) -> bool:
  return bool(path) and os.path.exists(os.path.join(path, META_FILE))


def load_converted(path: str) -> Tuple[Dict[str, Any], Any]:
  """(flags, params) of a directory written by `python -m adm_jax.convert`.

  flags also hold '_kind' ('unet', 'sr' or 'classifier'); `models.create_model(flags)`
  (or `create_classifier`) rebuilds the network.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(path)
  if not is_converted_checkpoint(path):
    raise FileNotFoundError(f"{path} is not a converted checkpoint (no {META_FILE})")
  with open(os.path.join(path, META_FILE)) as f:
    meta = json.load(f)
  _, abstract = build(meta["kind"], meta["flags"])
  with ocp.StandardCheckpointer() as checkpointer:
    restored = checkpointer.restore(os.path.join(path, "params"), {"params": abstract})
  return dict(meta["flags"], _kind=meta["kind"]), restored["params"]


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m adm_jax.convert",
      description="Convert a guided-diffusion checkpoint (.pt or .npz) to an orbax checkpoint.")
  parser.add_argument("--checkpoint", required=True, help="reference .pt or .npz state dict")
  parser.add_argument("--config", required=True,
                      help="released name (e.g. 256x256_diffusion), a fixture config.json, "
                           "or a JSON file of flags")
  parser.add_argument("--kind", choices=KINDS, default=None,
                      help="network kind (default: from the released name, else unet)")
  parser.add_argument("--out", required=True, help="output directory")
  args = parser.parse_args(argv)
  kind = args.kind
  if kind is None:
    kind = "unet" if args.config.endswith(".json") else models.released_kind(args.config)
  flags = resolve_config(args.config, kind)
  _, params = convert(args.checkpoint, flags, kind)
  save_converted(args.out, params, kind, flags)
  count = sum(x.size for x in jax.tree.leaves(params))
  print(f"converted {args.checkpoint} ({kind}, {count / 1e6:.2f}M parameters) -> {args.out}")


if __name__ == "__main__":
  main()
