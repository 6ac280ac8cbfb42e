"""Jitted sampling functions from (network apply function, diffusion process, sampler, guidance).

`make_sample_fn` returns ONE jitted function (params, key, labels[, classifier_params,
model_kwargs]) -> images in [-1, 1] that runs a whole sampler loop on device; `sample.py`
(the sample mode), the training loop's sample grids and the benchmark all use it.

Samplers: the reference's ancestral ("ddpm") and DDIM ("ddim") over a respaced process, and
the fast solvers of adm_jax.diffusion.solvers (DPM-Solver++ 1 / 2M / 3M / 2S,
SDE-DPM-Solver++(2M), PLMS, UniPC) over a time schedule of the un-respaced process. `steps` is
the number of network evaluations (NFE) per image; with classifier guidance each also costs
one classifier forward and backward.
"""

import dataclasses
from typing import Callable, Optional

import jax

from adm_jax import diffusion as diff
from adm_jax import guidance

# The reference's two samplers: ancestral ("ddpm") and DDIM, over a respaced process.
RESPACED_SAMPLERS = ("ddpm", "ddim")
SOLVERS = tuple(diff.SOLVERS)
SAMPLERS = RESPACED_SAMPLERS + SOLVERS
TIME_SCHEDULES = tuple(diff.TIME_SCHEDULES)
UNIPC_VARIANTS = tuple(diff.UNIPC_VARIANTS)


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
  """Which sampler, over which steps.

  name: one of SAMPLERS. steps > 0: network evaluations per image (for ddpm / ddim the
  respacing "N": N evenly spaced steps, both ends included); steps == 0 takes
  `timestep_respacing` instead (the reference's syntax: "250", "ddim50", "10,20,30"; ddpm /
  ddim only). eta: DDIM's noise. time_schedule: the solvers' spacing of t (one of
  TIME_SCHEDULES); thresholding: the solvers' dynamic thresholding of x_0 (Imagen).
  unipc only: order 1..3 (0: 3, or 2 with guidance, at most steps: the authors' advice) and
  variant "bh1" | "bh2" ("": "bh2"). clip_guided (ddim with classifier guidance): clip the
  guided x_0 too (False: the reference's unclipped x_0; see diffusion.ddim_sample).
  """

  name: str = "ddpm"
  steps: int = 0
  timestep_respacing: str = ""
  eta: float = 0.0
  time_schedule: str = "time_uniform"
  thresholding: bool = False
  order: int = 0
  variant: str = ""
  clip_guided: bool = True

  def __post_init__(self):
    if self.name not in SAMPLERS:
      raise ValueError(f"unknown sampler {self.name!r}; expected one of {', '.join(SAMPLERS)}")
    if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
      raise ValueError(
        f"sampler steps must be an integer >= 1 (or 0 to use "
        f"timestep_respacing), got {self.steps!r}"
      )
    if self.is_solver:
      if self.steps < 1:
        raise ValueError(f"sampler {self.name!r} needs steps >= 1 (network evaluations per image)")
      if self.time_schedule not in TIME_SCHEDULES:
        raise ValueError(
          f"unknown time_schedule {self.time_schedule!r}; expected one of "
          f"{', '.join(TIME_SCHEDULES)}"
        )
    elif self.steps == 0 and not str(self.timestep_respacing).strip():
      raise ValueError(f"sampler {self.name!r} needs steps >= 1 or a timestep_respacing")
    if self.eta and self.name != "ddim":
      raise ValueError(f"eta={self.eta} is DDIM's noise; sampler {self.name!r} does not take it")
    if not self.clip_guided and self.name != "ddim":
      raise ValueError(
        f"clip_guided=False is an option of sampler 'ddim' (its guided x_0), not of {self.name!r}"
      )
    if self.thresholding and not self.is_solver:
      raise ValueError(
        f"thresholding is an option of the solvers ({', '.join(SOLVERS)}), not of {self.name!r}"
      )
    for option, value in (("order", self.order), ("variant", self.variant)):
      if value and self.name != "unipc":
        raise ValueError(
          f"{option}={value!r} is an option of sampler 'unipc', not of {self.name!r}"
        )
    if isinstance(self.order, bool) or self.order not in (0, 1, 2, 3):
      raise ValueError(
        f"sampler 'unipc' order must be 1, 2 or 3 (0: its default), got {self.order!r}"
      )
    if self.variant not in ("",) + UNIPC_VARIANTS:
      raise ValueError(
        f"unknown UniPC variant {self.variant!r}; expected one of {', '.join(UNIPC_VARIANTS)}"
      )

  @classmethod
  def from_config(cls, section, prefix: str = "") -> "SamplerSpec":
    """The spec of a config section: `sample` (keys sampler, steps, timestep_respacing, eta,
    time_schedule, thresholding, solver_order, unipc_variant, clip_guided) or `train` with
    prefix 'grid_'
    (grid_sampler, grid_steps, ...); a field whose key the section lacks keeps its default."""
    keys = {"name": "sampler", "order": "solver_order", "variant": "unipc_variant"}
    values = {}
    for field in dataclasses.fields(cls):
      key = prefix + keys.get(field.name, field.name)
      if key in section:
        values[field.name] = type(field.default)(section[key])
    return cls(**values)

  @property
  def is_solver(self) -> bool:
    return self.name in SOLVERS

  def solver_options(self, guided: bool = False) -> dict:
    """The solver's own keyword arguments (UniPC's order and variant), defaults resolved."""
    if self.name != "unipc":
      return {}
    order = self.order or diff.unipc_default_order(self.steps, guided)
    return {"order": order, "variant": self.variant or diff.UNIPC_VARIANT}

  @property
  def respacing(self) -> str:
    """The respacing spec of the process a respaced sampler visits."""
    return str(self.steps) if self.steps else str(self.timestep_respacing)

  def process(self, base: diff.GaussianDiffusion) -> diff.GaussianDiffusion:
    """The process this sampler runs over: respaced for ddpm / ddim, `base` for the solvers."""
    if self.is_solver:
      return base
    return diff.respaced(base, self.respacing)

  def check(self, base: diff.GaussianDiffusion) -> None:
    """Raises ValueError when the sampler cannot run on `base` (e.g. more steps than it has)."""
    if self.is_solver:
      diff.solver_plan(
        base, self.name, self.steps, time_schedule=self.time_schedule, **self.solver_options()
      )
    else:
      self.process(base)

  def nfe(self, base: diff.GaussianDiffusion) -> int:
    """Network evaluations per image."""
    if self.is_solver:
      return diff.solver_plan(
        base, self.name, self.steps, time_schedule=self.time_schedule, **self.solver_options()
      ).nfe
    return self.process(base).num_timesteps

  def describe(self) -> str:
    if self.is_solver:
      unipc = ""
      if self.name == "unipc":
        order = self.order or (
          f"{diff.unipc_default_order(self.steps)} (guided: "
          f"{diff.unipc_default_order(self.steps, True)})"
        )
        unipc = f" {self.solver_options()['variant']} order {order}"
      return (
        f"{self.name}{unipc}, {self.steps} network evaluations, {self.time_schedule} time "
        f"schedule" + (", dynamic thresholding" if self.thresholding else "")
      )
    extra = f", eta {self.eta}" if self.name == "ddim" and self.eta else ""
    if not self.clip_guided:
      extra += ", guided x_0 unclipped"
    return f"{self.name} over respacing {self.respacing!r}{extra}"


def make_sample_fn(
  apply_fn: Callable,
  base: diff.GaussianDiffusion,
  image_shape,
  sampler: SamplerSpec,
  *,
  class_cond: bool = False,
  cfg_scale: float = 0.0,
  null_label: int = -1,
  classifier_fn: Optional[Callable] = None,
  classifier_scale: float = 0.0,
  clip_denoised: bool = True,
  out_shardings=None,
):
  """A jitted sampler fn(params, key, labels[, classifier_params, model_kwargs]) -> [B, H, W, C].

  apply_fn(params, x, t, y, **model_kwargs) -> network output (model_kwargs: e.g. the
  super-resolution model's low_res [B, h, w, C]). `base` is the un-respaced process the
  network was trained with; the sampler picks the steps it visits.
  cfg_scale > 0 turns on classifier-free guidance (needs class_cond and null_label);
  classifier_fn(classifier_params, x, t) -> logits turns on classifier guidance.
  """
  if cfg_scale < 0 or classifier_scale < 0:
    raise ValueError(
      f"guidance scales must be >= 0, got cfg_scale={cfg_scale}, "
      f"classifier_scale={classifier_scale}"
    )
  if cfg_scale and not class_cond:
    raise ValueError("classifier-free guidance (cfg_scale > 0) needs a class-conditional model")
  sampler.check(base)  # bad steps / schedules fail here, before anything is traced
  process = sampler.process(base)

  def run(params, key, labels, classifier_params=None, model_kwargs=None):
    def model_fn(x, t, y=None, **kw):
      return apply_fn(params, x, t, y if class_cond else None, **kw)

    if cfg_scale:
      model_fn = guidance.classifier_free_model_fn(model_fn, cfg_scale, null_label)
    cond_fn = None
    if classifier_fn is not None and classifier_scale:
      cond_fn = guidance.classifier_cond_fn(
        lambda x, t: classifier_fn(classifier_params, x, t), classifier_scale
      )
    shape = (labels.shape[0],) + tuple(image_shape)
    kwargs = dict(
      clip_denoised=clip_denoised, cond_fn=cond_fn, model_kwargs=dict(model_kwargs or {}, y=labels)
    )
    if sampler.is_solver:
      guided = bool(cfg_scale) or cond_fn is not None
      return diff.solver_sample_loop(
        process,
        model_fn,
        shape,
        key,
        solver=sampler.name,
        steps=sampler.steps,
        time_schedule=sampler.time_schedule,
        thresholding=sampler.thresholding,
        **sampler.solver_options(guided),
        **kwargs,
      )
    if sampler.name == "ddim":
      return diff.ddim_sample_loop(
        process, model_fn, shape, key, eta=sampler.eta, clip_guided=sampler.clip_guided, **kwargs
      )
    return diff.p_sample_loop(process, model_fn, shape, key, **kwargs)

  return jax.jit(run, out_shardings=out_shardings)
