"""Cross-platform lowering of tiny networks: the kernels chosen per platform, bf16 precision, remat.

The StableHLO of the production steps — the diffusion train step and the classifier train step
of adm_jax.experiment, and a classifier-guided sampling loop of adm_jax.sampling — is lowered
for 'cuda', 'tpu' and 'cpu' on this CPU machine
(`lowering_platforms`; nothing runs on a GPU / TPU). GPU / TPU get plain XLA (no optimisation
barriers, no [Cin, H, W, B] activation copies, no CPU-only custom calls); CPU keeps its custom
kernels. With bfloat16 compute, convolutions and matmuls take bfloat16 operands and every sum
(norm statistics, softmax, bias gradients, pooling) is a float32 reduction. The GPU / TPU branches
are also run here against the CPU ones (same values and gradients).
"""

import collections
import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adm_jax import config_base
from adm_jax import experiment
from adm_jax import networks
from adm_jax import sampling
from adm_jax import sharding as shd
from adm_jax.models import layers

# Its tests share module-level traced programs / fixtures: one worker runs them all.
pytestmark = pytest.mark.xdist_group("lowering")

# 0.83M parameters; attention at 8x8 (T = 64, 2 heads of 32 channels), BigGAN up/down, AdaGN.
UNET = dict(
  image_size=16,
  in_channels=3,
  num_channels=32,
  num_res_blocks=1,
  channel_mult="1,2",
  attention_resolutions="8",
  num_heads=2,
  learn_sigma=True,
  class_cond=True,
  num_classes=10,
  use_scale_shift_norm=True,
  resblock_updown=True,
)
# 0.35M parameters; added timestep embedding (no AdaGN), attention pool over 8x8 maps (T + 1 = 65).
CLASSIFIER = dict(
  image_size=16,
  in_channels=3,
  classifier_width=32,
  classifier_depth=1,
  channel_mult="1,2",
  classifier_attention_resolutions="8",
  classifier_pool="attention",
  classifier_use_scale_shift_norm=False,
  classifier_resblock_updown=True,
  num_classes=10,
)
POOL_TOKENS = 65
BATCH = 2
ACCELERATORS = ("cuda", "tpu")
# Custom calls XLA:GPU / TPU understand; anything else (lapack_*, ducc_fft, host callbacks) is
# CPU-only or foreign to them.
PORTABLE_CUSTOM_CALLS = {"Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape"}


# --- StableHLO text helpers -----------------------------------------------------------------


def op_lines(text, op):
  """Lines of StableHLO text applying `op` (pretty or generic form; 'reduce' is not
  'reduce_window')."""
  pattern = re.compile(r'(?:= |^\s*)"?stablehlo\.' + op + r"\b(?![_\w])")
  return [line for line in text.splitlines() if pattern.search(line)]


def _element_types(signature):
  return [t.split("x")[-1] for t in re.findall(r"tensor<([^>]*)>", signature)]


def _shapes(signature):
  return [
    tuple(int(d) for d in t.split("x")[:-1]) for t in re.findall(r"tensor<([^>]*)>", signature)
  ]


def operand_signature(line):
  """(operand types, result types) of an op line ending in ': (tensor<..>, ...) -> tensor<..>'."""
  m = re.search(r" : \((.*)\) -> (.*)$", line)
  assert m, line
  return m.group(1), m.group(2)


def count(text, op):
  return len(op_lines(text, op))


def custom_call_targets(text):
  return set(re.findall(r"stablehlo\.custom_call @([\w.$\-]+)", text)) | set(
    re.findall(r'call_target_name = "([^"]+)"', text)
  )


def convolution_types(text):
  """Counter of the (lhs, rhs) element types of every convolution."""
  return collections.Counter(
    tuple(_element_types(operand_signature(ln)[0])) for ln in op_lines(text, "convolution")
  )


def dot_generals(text):
  """(effective (lhs, rhs) element types, operand ranks, signature) of every dot_general; an
  explicit algorithm (e.g. BF16_BF16_F32) gives the types the operands are computed in."""
  out = []
  for line in op_lines(text, "dot_general"):
    signature = operand_signature(line)[0]
    types = tuple(_element_types(signature))
    algo = re.search(r"lhs_precision_type = (\w+), rhs_precision_type = (\w+)", line)
    if algo:
      types = algo.groups()
    out.append((types, tuple(len(s) for s in _shapes(signature)), signature))
  return out


def reductions(text):
  """(op, combiner, operand element type) of every reduce / reduce_window, both text forms."""
  out = []
  for line in op_lines(text, "reduce"):
    m = re.search(r"applies stablehlo\.(\w+) across dimensions = \[[\d, ]*\] : \((.*)\) ->", line)
    if m:
      out.append(("reduce", m.group(1), _element_types(m.group(2))[0]))
  for m in re.finditer(
    r'"stablehlo\.(reduce|reduce_window)"\(.*?\n(.*?)\n\s*\}\)[^\n]*? : \((.*?)\) ->', text, re.S
  ):
    combiner = re.search(r"stablehlo\.(\w+)", m.group(2)).group(1)
    out.append((m.group(1), combiner, _element_types(m.group(3))[0]))
  return out


def activation_transposes_to_cin_h_w_b(text):
  """Transposes [B, H, W, C] -> [C, H, W, B] of activations (the CPU kernel-gradient layout)."""
  return [
    ln
    for ln in op_lines(text, "transpose")
    if "dims = [3, 1, 2, 0]" in ln and _shapes(operand_signature(ln)[0])[0][0] == BATCH
  ]


def lower(fn, args, platform):
  return str(jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text())


# --- the three programs ----------------------------------------------------------------------


def _unet(dtype, **flags):
  return networks.from_flags("unet", dict(UNET, dtype=dtype, **flags))


def _classifier(dtype):
  return networks.from_flags("classifier", dict(CLASSIFIER, dtype=dtype))


def tiny_config(dtype, remat_policy=""):
  """A config of the tiny UNet and classifier above (cosine schedule, learned sigma)."""
  c = config_base.base_config()
  c.model.update({k: v for k, v in UNET.items()}, dtype=dtype, remat_policy=remat_policy)
  c.diffusion.update(noise_schedule="cosine")
  c.classifier.update(
    {k: v for k, v in CLASSIFIER.items() if k not in ("image_size", "in_channels")},
    dtype=dtype,
    batch_size=BATCH,
  )
  c.train.update(batch_size=BATCH, ema_rate="0.999")
  return c


@functools.lru_cache(maxsize=None)
def train_step_program(dtype, remat_policy=""):
  """(the production train step of experiment.build, abstract state, abstract batch)."""
  exp = experiment.build(
    tiny_config(dtype, remat_policy), shd.create_mesh(1, jax.devices()[:1]), donate=False
  )
  return exp.train_step, exp.abstract_state, exp.abstract_batch()


# Tracing (Python) is most of a lowering's cost: each program is traced once per dtype and
# lowered for every platform from that trace.
@functools.lru_cache(maxsize=None)
def traced_train_step(dtype):
  step, state, batch = train_step_program(dtype)
  return step.trace(state, batch)


@functools.lru_cache(maxsize=None)
def lowered_train_step(dtype, platform):
  return str(traced_train_step(dtype).lower(lowering_platforms=(platform,)).as_text())


@functools.lru_cache(maxsize=None)
def traced_classifier_gradient(dtype):
  """The classifier's train step (cross-entropy on noisy images, AdamW) of
  experiment.build_classifier."""
  exp = experiment.build_classifier(
    tiny_config(dtype), shd.create_mesh(1, jax.devices()[:1]), donate=False
  )
  return exp.train_step.trace(exp.abstract_state, exp.abstract_batch())


@functools.lru_cache(maxsize=None)
def lowered_classifier_gradient(dtype, platform):
  return str(traced_classifier_gradient(dtype).lower(lowering_platforms=(platform,)).as_text())


@functools.lru_cache(maxsize=None)
def lowered_guided_sampling(dtype, platform):
  return str(traced_guided_sampling(dtype).lower(lowering_platforms=(platform,)).as_text())


@functools.lru_cache(maxsize=None)
def traced_guided_sampling(dtype):
  """The sample mode's function: two ancestral steps in one lax.scan, each with
  grad_x log p(y | x_t) of the classifier."""
  config = tiny_config(dtype)
  unet, classifier = networks.unet(config), networks.classifier(config)
  sample_fn = sampling.make_sample_fn(
    unet.inference_fn(),
    networks.diffusion_process(config),
    unet.image_shape,
    sampling.SamplerSpec("ddpm", 2),
    class_cond=True,
    classifier_fn=classifier.inference_fn(),
    classifier_scale=1.0,
  )
  params, clf_params = unet.abstract_params(), classifier.abstract_params()
  args = (params, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((BATCH,), jnp.int32), clf_params)
  return sample_fn.trace(*args)


PROGRAMS = {
  "train_step": lowered_train_step,
  "classifier_gradient": lowered_classifier_gradient,
  "guided_sampling": lowered_guided_sampling,
}


# --- GPU / TPU: plain XLA -------------------------------------------------------------------


@pytest.mark.parametrize("program", sorted(PROGRAMS))
@pytest.mark.parametrize("platform", ACCELERATORS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_accelerator_lowering_is_plain_xla(program, platform, dtype):
  text = PROGRAMS[program](dtype, platform)
  assert count(text, "convolution") > 10
  assert count(text, "optimization_barrier") == 0
  assert custom_call_targets(text) <= PORTABLE_CUSTOM_CALLS, custom_call_targets(text)
  assert not activation_transposes_to_cin_h_w_b(text)
  if program == "guided_sampling":
    assert count(text, "while") >= 1  # the sampling loop stayed one scan


def test_cpu_lowering_keeps_the_cpu_kernels():
  text = lowered_train_step("float32", "cpu")
  forward_convolutions = count(lowered_train_step("float32", "cuda"), "convolution") // 3
  # Two barriers per convolution's backward (flipped kernel; kernel-gradient operands).
  assert count(text, "optimization_barrier") >= forward_convolutions > 5
  assert len(activation_transposes_to_cin_h_w_b(text)) >= forward_convolutions - 1
  assert custom_call_targets(text) <= PORTABLE_CUSTOM_CALLS


def test_accelerators_use_the_autodiff_convolution_gradients():
  # Input gradients as convolutions with a reversed kernel (what XLA:GPU's cuDNN rewriter
  # matches); on CPU the flipped kernel is materialised behind a barrier instead.
  cuda = lowered_train_step("float32", "cuda")
  cpu = lowered_train_step("float32", "cpu")
  assert count(cuda, "reverse") > count(cpu, "reverse")
  assert count(cuda, "transpose") < count(cpu, "transpose")


# --- bfloat16: bf16 operands, float32 sums --------------------------------------------------


@pytest.mark.parametrize("program", sorted(PROGRAMS))
@pytest.mark.parametrize("platform", ACCELERATORS + ("cpu",))
def test_bfloat16_sums_are_float32(program, platform):
  text = PROGRAMS[program]("bfloat16", platform)
  found = reductions(text)
  floats = [r for r in found if r[2] in ("f32", "bf16", "f16")]
  assert sum(1 for r in floats if r[1] == "add" and r[2] == "f32") > 10
  assert any(r[0] == "reduce_window" for r in floats)  # the 2x2 average pooling (region form)
  low = [r for r in floats if r[2] != "f32"]
  assert not low, collections.Counter(low)
  assert any(r[1] == "maximum" and r[2] == "f32" for r in floats)  # the softmax max


@pytest.mark.parametrize("platform", ACCELERATORS + ("cpu",))
def test_bfloat16_convolutions(platform):
  convs = convolution_types(lowered_train_step("bfloat16", platform))
  assert convs[("bf16", "bf16")] > 10
  # Only the float32 output head (the reference keeps `out` in float32): forward, input and
  # kernel gradient.
  assert convs[("f32", "f32")] == 3 and set(convs) == {("bf16", "bf16"), ("f32", "f32")}
  clf = convolution_types(lowered_classifier_gradient("bfloat16", platform))
  assert set(clf) == {("bf16", "bf16")}


@pytest.mark.parametrize("platform", ACCELERATORS)
def test_bfloat16_matmuls(platform):
  # Activation matmuls (qkv / proj / attention, rank >= 3) run on bf16 operands; the float32
  # ones are the timestep-embedding MLP, the train step's metrics and the classifier's pool.
  for text, f32_allowed in (
    (lowered_train_step("bfloat16", platform), lambda sig: False),
    (
      lowered_classifier_gradient("bfloat16", platform),
      lambda sig: f"x{POOL_TOKENS}x" in sig or f"<{BATCH}x{POOL_TOKENS}" in sig,
    ),
  ):
    dots = [d for d in dot_generals(text) if min(d[1]) >= 3]
    assert sum(1 for d in dots if d[0] == ("bf16", "bf16")) >= 6
    wide = [d for d in dots if d[0] != ("bf16", "bf16") and not f32_allowed(d[2])]
    assert not wide, wide[:3]


def test_outputs_and_loss_are_float32():
  unet, classifier = _unet("bfloat16"), _classifier("bfloat16")
  size = UNET["image_size"]
  x, t, y = (
    jnp.zeros((BATCH, size, size, 3)),
    jnp.zeros((BATCH,), jnp.int32),
    jnp.zeros((BATCH,), jnp.int32),
  )
  out = jax.eval_shape(unet.apply, unet.abstract_params(), x, t, y)
  logits = jax.eval_shape(classifier.apply, classifier.abstract_params(), x, t)
  assert out.dtype == jnp.float32 and logits.dtype == jnp.float32
  step, state, batch = train_step_program("bfloat16")
  _, metrics = jax.eval_shape(step, state, batch)
  assert metrics["weighted_loss"].dtype == jnp.float32
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.params))


# --- the GPU / TPU branches compute what the CPU ones do ------------------------------------


@pytest.mark.parametrize("new_order", [False, True])
def test_attention_branches_agree(new_order):
  qkv = jax.random.normal(jax.random.PRNGKey(0), (2, 64, 3 * 2 * 16)) * 2
  weights = jax.random.normal(jax.random.PRNGKey(1), (2, 64, 2 * 16))
  cpu = lambda a: jnp.sum(layers.attention(*layers.split_heads(a, 2, new_order)) * weights)
  xla = lambda a: jnp.sum(layers._attention_xla(a, 2, new_order, try_cudnn=False) * weights)
  np.testing.assert_allclose(xla(qkv), cpu(qkv), rtol=1e-5)
  np.testing.assert_allclose(jax.grad(xla)(qkv), jax.grad(cpu)(qkv), rtol=1e-4, atol=1e-5)
  bf = qkv.astype(jnp.bfloat16)
  np.testing.assert_allclose(
    layers._attention_xla(bf, 2, new_order, False).astype(jnp.float32),
    layers.attention(*layers.split_heads(bf, 2, new_order)).astype(jnp.float32),
    atol=0.05,
  )


def test_cudnn_attention_falls_back_to_xla(monkeypatch):
  # With a GPU as default backend the cuda branch tries cuDNN; without a CUDA jaxlib that fails
  # while tracing, and the XLA implementation is used instead.
  monkeypatch.setattr(layers.jax, "default_backend", lambda: "gpu")
  qkv = jax.random.normal(jax.random.PRNGKey(0), (2, 64, 3 * 2 * 32)).astype(jnp.bfloat16)
  assert layers._cudnn_may_apply(qkv.reshape(2, 64, 6, 32)[:, :, :2])
  tried = layers._attention_xla(qkv, 2, False, try_cudnn=True)
  np.testing.assert_array_equal(tried, layers._attention_xla(qkv, 2, False, try_cudnn=False))
  text = lower(lambda a: layers.qkv_attention(a, 2, False), (qkv,), "cuda")
  assert not custom_call_targets(text)


@pytest.mark.parametrize("shape", [(2, 4, 4, 64), (3, 32)])
def test_group_norm_branches_agree(shape):
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  x = jax.random.normal(keys[0], shape) * 2 + 0.5
  scale, bias = jax.random.normal(keys[1], shape[-1:]), jax.random.normal(keys[2], shape[-1:])
  weights = jax.random.normal(keys[3], shape)
  cpu = lambda *a: jnp.sum(layers._group_norm_cpu(*a, 32, 1e-5, True) * weights)
  plain = lambda *a: jnp.sum(layers._group_norm_fwd(*a, 32, 1e-5, True)[0] * weights)
  np.testing.assert_array_equal(plain(x, scale, bias), cpu(x, scale, bias))
  for a, b in zip(
    jax.grad(plain, (0, 1, 2))(x, scale, bias), jax.grad(cpu, (0, 1, 2))(x, scale, bias)
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


def test_dense_is_flax_dense_with_float32_bias_gradient():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 7, 24))
  ours, flax_dense = layers.Dense(16), nn.Dense(16)
  p = ours.init(jax.random.PRNGKey(1), x)
  q = flax_dense.init(jax.random.PRNGKey(1), x)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), p) == jax.tree.map(
    lambda a: (a.shape, a.dtype), q
  )
  for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(ours.apply(p, x), flax_dense.apply(q, x))
  # bf16: the bias gradient is the float32 sum of the bf16 cotangents (autodiff summed in bf16).
  g = jax.random.normal(jax.random.PRNGKey(2), (4, 7, 16)).astype(jnp.bfloat16)
  bf16 = layers.Dense(16, dtype=jnp.bfloat16)
  _, vjp = jax.vjp(lambda params: bf16.apply(params, x), p)
  bias_grad = vjp(g)[0]["params"]["bias"]
  assert bias_grad.dtype == jnp.float32
  np.testing.assert_allclose(bias_grad, g.astype(jnp.float32).sum((0, 1)), rtol=1e-6)


# --- remat --------------------------------------------------------------------------------


def test_remat_lowers_without_barriers_and_recomputes():
  step, state, batch = train_step_program("bfloat16", "nothing_saveable")
  text = str(step.trace(state, batch).lower(lowering_platforms=("cuda",)).as_text())
  assert count(text, "optimization_barrier") == 0
  # Recomputed: the first convolution of each of the 10 residual blocks (its output feeds a
  # GroupNorm; the other convolutions' outputs are not needed by any gradient).
  plain = lowered_train_step("bfloat16", "cuda")
  assert count(text, "convolution") == count(plain, "convolution") + 10


def _compiled_gradient_memory(**flags):
  unet = _unet("float32", **flags)
  params = unet.abstract_params()

  def grad(p, x, t):
    return jax.grad(lambda p: jnp.sum(unet.apply(p, x, t, t % 10) ** 2))(p)

  size = UNET["image_size"]
  x, t = (
    jax.ShapeDtypeStruct((8, size, size, 3), jnp.float32),
    jax.ShapeDtypeStruct((8,), jnp.int32),
  )
  compiled = jax.jit(grad).trace(params, x, t).lower().compile()
  return compiled.memory_analysis().temp_size_in_bytes, compiled.cost_analysis()["flops"]


def test_remat_cuts_compiled_activation_memory():
  # Measured (batch 8, temp / GFLOP): no remat 21.1 MiB / 3.40; use_checkpoint (convs_saveable)
  # 10.5 / 3.68; nothing_saveable 10.1 / 4.24. jax.checkpoint alone (the former use_checkpoint)
  # kept 21.1 MiB: XLA:CPU scheduled each recomputation into the forward pass; without the
  # cotangent dependency (unet._after) XLA merged the recomputation with the forward instead.
  plain_bytes, plain_flops = _compiled_gradient_memory()
  remat_bytes, remat_flops = _compiled_gradient_memory(use_checkpoint=True)
  assert remat_flops > 1.03 * plain_flops  # something is recomputed
  assert remat_bytes < 0.6 * plain_bytes, (remat_bytes, plain_bytes)
