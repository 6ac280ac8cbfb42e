"""Writes solver_trajectories_gd_tiny_cond.npz: whole trajectories of the fast solvers' references.

The references run on the PyTorch networks of the fixture set `gd_tiny_cond` (built by the
reference harness from config.json, weights unet.pt / classifier.pt): the official DPM-Solver
(LuChengTHU/dpm-solver, dpm_solver_pytorch.py at commit 52bc3fb, imported from its checkout)
for DPM-Solver++ 2M / 3M / 2S, and diffusers (pip) for SDE-DPM-Solver++(2M)
(DPMSolverMultistepScheduler, algorithm_type='sde-dpmsolver++', midpoint) and PLMS
(PNDMScheduler, skip_prk_steps=True). Nothing of either is copied into adm_jax.

usage (the reference harness's environment, see ../shared/ref-harness/README.md, plus
`pip install diffusers`):
  GD_REF=/path/to/guided-diffusion DPM_SOLVER_REF=/path/to/dpm-solver \\
    python tests/data/make_solver_trajectories.py

How the references are driven:
  * schedule: NoiseScheduleVP('discrete', betas=<the reference's float64 betas>), which cuts
    the lambda < -5.1 tail (cosine, T = 1000: N = 996 steps kept).
  * network time: the official wrapper calls the model with t_in = (t - 1/N) * 1000; the
    model below is called with t_in * N / 1000 = (t - 1/N) * N, the training step that
    alpha_t belongs to, which is adm_jax's convention (the two differ for N != 1000).
    The UNet's first 3 of its 6 output channels are eps.
  * guidance: model_wrapper 'classifier' with the attention-pool classifier, log p(y|x_t)
    from its log-softmax, guidance_scale = classifier_scale * [0, 1] per sample, so batch
    item 0 (label 3) is unguided and item 1 (label 711) guided in the same run.
    Classifier-free guidance (cfg_*): eps_u + s (eps_c - eps_u), s = 1 + w = 3, null label
    999, as the official 'classifier-free' formula in one batched call, with the same
    per-sample classifier guidance on top (item 0: cfg alone, item 1: cfg + classifier).
  * time grids: the official get_time_steps (skip types time_uniform, logSNR,
    time_quadratic); 'karras' (rho = 7 between the end points' sigma = exp(-lambda), mapped
    back by the schedule's own inverse_lambda) replaces get_time_steps on the instance, so
    the singlestep solver also takes its karras midpoints from it.
  * DPM-Solver++: DPM_Solver(algorithm_type='dpmsolver++'), methods multistep (order 2, 3)
    and singlestep (order 2), lower_order_final=True, t from 1 to 1/N.
  * SDE-DPM-Solver++(2M), on the same grids: diffusers' scheduler with its sigmas replaced by
    exp(-lambda) of the official grid (final_sigmas_type 'sigma_min': no jump to sigma 0),
    lower_order_final = steps < 10 (the official rule; diffusers' own is < 15), per-step
    noise z_i; the eps is the official wrapper's guided eps at continuous t.
  * PLMS, on the same grids (steps = NFE, steps - 1 intervals): PNDMScheduler with
    num_train_timesteps = steps - 1 and its alphas_cumprod replaced by abar at the grid
    points (index k = grid point steps - 2 - k, final_alpha_cumprod = abar(1/N)).
  * native grids: the schedulers' own integer discretisations, the UNet called at the integer
    step n with the same per-sample classifier guidance (sigma = sqrt(1 - abar_n)), their
    alphas_cumprod replaced by the float64 ones (diffusers casts betas to float32 first):
    SDE-2M with set_timesteps(10), lambda_min_clipped=-5.1, final sigma of step 0; PLMS
    with set_timesteps(9), steps_offset=1, set_alpha_to_one=False (10 network calls).

Stored (NCHW float32, batch 2, 32x32; 'states' = x after each solver step, x_T excluded):
  x_T, y                    initial noise (numpy RandomState(0)) and labels [3, 711]; the
                            next 10 draws of that stream, [10, 2, 3, 32, 32], are the SDE's
                            per-step noise (not stored; the test regenerates them)
  times_<schedule>          the 11 official grid points of 10 intervals (float32)
  <solver>_<schedule>       states of 10 network calls, classifier guidance on item 1;
                            solver in dpmpp_2m, dpmpp_3m, dpmpp_2s, sde_dpmpp_2m, plms
  <solver>_cfg7             7 calls on time_uniform (lower-order final steps; 2S ends with a
                            first-order step), classifier-free guidance, classifier on item 1
  dpmpp_2m_logsnr_threshold 10 calls, unguided, dynamic thresholding (0.995, max 1)
  sde_native, sde_native_steps    diffusers' own 10 integer steps (+ final step 0)
  plms_native, plms_native_steps  likewise for PLMS (10 grid points, 10 network calls)
"""

import os
import sys

import numpy as np

HARNESS = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "ref-harness"
)
FIXTURE = os.path.join(HARNESS, "..", "fixtures", "gd_tiny_cond")
sys.path.insert(0, HARNESS)

import build  # noqa: E402  (puts the reference on sys.path)
import torch as th  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SCHEDULES = {
  "time_uniform": "time_uniform",
  "logsnr": "logSNR",
  "time_quadratic": "time_quadratic",
  "karras": "karras",
}
DPM = {"dpmpp_2m": ("multistep", 2), "dpmpp_3m": ("multistep", 3), "dpmpp_2s": ("singlestep", 2)}
STEPS, SHORT, NULL_LABEL, CFG_SCALE, RHO = 10, 7, 999, 3.0, 7.0


def import_dpm_solver():
  path = os.environ.get("DPM_SOLVER_REF", "")
  if not os.path.isfile(os.path.join(path, "dpm_solver_pytorch.py")):
    raise SystemExit(
      "set DPM_SOLVER_REF to a checkout of LuChengTHU/dpm-solver (commit 52bc3fb) "
      f"holding dpm_solver_pytorch.py; got {path!r}"
    )
  sys.path.insert(0, os.path.abspath(path))
  import dpm_solver_pytorch  # pylint: disable=import-outside-toplevel

  return dpm_solver_pytorch


class References:
  """The fixture networks, the official schedule and the guided eps functions."""

  def __init__(self, dpm_solver):
    self.dpm = dpm_solver
    cfg = build.load_config(os.path.join(FIXTURE, "config.json"))
    self.unet, gd = build.build_model_and_diffusion(cfg, timestep_respacing="")
    self.unet.load_state_dict(th.load(os.path.join(FIXTURE, "unet.pt")))
    self.unet.eval()
    self.classifier = build.build_classifier(cfg)
    self.classifier.load_state_dict(th.load(os.path.join(FIXTURE, "classifier.pt")))
    self.classifier.eval()
    self.betas = np.asarray(gd.betas, np.float64)
    self.abar = np.cumprod(1.0 - self.betas)
    self.ns = dpm_solver.NoiseScheduleVP("discrete", betas=th.from_numpy(self.betas))
    self.n = self.ns.total_N
    self.clf_scale = cfg["classifier_scale"] * th.tensor([0.0, 1.0]).reshape(2, 1, 1, 1)

  def step_time(self, t_in):
    return t_in * (self.n / 1000.0)  # (t - 1/N) * 1000  ->  (t - 1/N) * N

  def eps_at_step(self, x, step, y):
    return self.unet(x, step, y)[:, :3]

  def eps(self, x, t_in, y):
    return self.eps_at_step(x, self.step_time(t_in), y)

  def cfg_eps(self, x, t_in, y):
    out = self.eps(th.cat([x, x]), th.cat([t_in, t_in]), th.cat([th.full_like(y, NULL_LABEL), y]))
    uncond, cond = out.chunk(2)
    return uncond + CFG_SCALE * (cond - uncond)

  def log_prob(self, x, t_in, y):
    logp = F.log_softmax(self.classifier(x, self.step_time(t_in)), dim=-1)
    return logp[th.arange(len(y)), y]

  def model_fn(self, y, guided, cfg=False):
    """The official wrapper's eps(x, t_continuous)."""
    kw = dict(model_type="noise", model_kwargs={"y": y})
    if guided:
      kw.update(
        guidance_type="classifier",
        condition=y,
        guidance_scale=self.clf_scale,
        classifier_fn=self.log_prob,
      )
    return self.dpm.model_wrapper(self.cfg_eps if cfg else self.eps, self.ns, **kw)

  def solver(self, model_fn, thresholding=False):
    solver = self.dpm.DPM_Solver(
      model_fn,
      self.ns,
      algorithm_type="dpmsolver++",
      correcting_x0_fn="dynamic_thresholding" if thresholding else None,
    )
    original, ns = solver.get_time_steps, self.ns

    def get_time_steps(skip_type, t_T, t_0, N, device):
      if skip_type != "karras":
        return original(skip_type, t_T, t_0, N, device)
      lam_hi, lam_lo = ns.marginal_lambda(th.tensor([t_T])), ns.marginal_lambda(th.tensor([t_0]))
      hi, lo = th.exp(-lam_hi / RHO), th.exp(-lam_lo / RHO)  # sigma^(1/rho), sigma = e^-lambda
      sigma = (hi + th.linspace(0.0, 1.0, N + 1) * (lo - hi)) ** RHO
      return ns.inverse_lambda(-th.log(sigma)).to(device)

    solver.get_time_steps = get_time_steps
    return solver


def dpm_states(ref, model_fn, name, skip, steps, x_t, thresholding=False):
  method, order = DPM[name]
  solver = ref.solver(model_fn, thresholding)
  _, states = solver.sample(
    x_t.clone(),
    steps=steps,
    order=order,
    skip_type=skip,
    method=method,
    lower_order_final=True,
    return_intermediate=True,
  )
  return th.stack(states[1:] if method == "multistep" else states)


def sde_states(ref, model_fn, times, x_t, noise):
  from diffusers import DPMSolverMultistepScheduler  # pylint: disable=import-outside-toplevel

  steps = len(times) - 1
  sched = DPMSolverMultistepScheduler(
    num_train_timesteps=len(ref.betas),
    trained_betas=ref.betas,
    solver_order=2,
    algorithm_type="sde-dpmsolver++",
    solver_type="midpoint",
    lower_order_final=steps < 10,
    final_sigmas_type="sigma_min",
  )
  sched.set_timesteps(steps)
  sched.sigmas = th.exp(-ref.ns.marginal_lambda(times)).float()  # sqrt((1 - abar) / abar)
  sched.timesteps = th.arange(steps)
  sched.set_begin_index(0)
  x, states = x_t.clone(), []
  for i in range(steps):
    eps = model_fn(x, times[i].expand(x.shape[0]))
    x = sched.step(eps, sched.timesteps[i], x, variance_noise=noise[i]).prev_sample
    states.append(x)
  return th.stack(states)


def plms_states(ref, model_fn, times, x_t):
  from diffusers import PNDMScheduler  # pylint: disable=import-outside-toplevel

  m = len(times) - 1
  sched = PNDMScheduler(
    num_train_timesteps=m,
    trained_betas=np.full(m, 0.01),
    skip_prk_steps=True,
    set_alpha_to_one=False,
  )
  abar = th.exp(2.0 * ref.ns.marginal_log_mean_coeff(times)).double()
  sched.alphas_cumprod = abar[:m].flip(0)  # timestep k is grid point m - 1 - k
  sched.final_alpha_cumprod = abar[m]
  sched.set_timesteps(m)
  x, states = x_t.clone(), []
  for i, k in enumerate(sched.timesteps):
    eps = model_fn(x, times[m - 1 - int(k)].expand(x.shape[0]))
    x = sched.step(eps, k, x).prev_sample
    if i > 0:  # the first call's output is the warm-up's predictor, not a step
      states.append(x)
  return th.stack(states)


def native_runs(ref, x_t, noise, y, out):
  from diffusers import DPMSolverMultistepScheduler  # pylint: disable=import-outside-toplevel
  from diffusers import PNDMScheduler  # pylint: disable=import-outside-toplevel

  abar = th.from_numpy(ref.abar)

  def eps(x, step):  # guided eps at an integer step: eps - scale sigma grad log p(y | x_t)
    step = step.expand(x.shape[0])
    with th.enable_grad():
      x_in = x.detach().requires_grad_(True)
      grad = th.autograd.grad(ref.log_prob(x_in, step * (1000.0 / ref.n), y).sum(), x_in)[0]
    sigma = (1.0 - abar[step]).sqrt().float().reshape(-1, 1, 1, 1)
    return ref.eps_at_step(x, step, y) - ref.clf_scale * sigma * grad

  sde = DPMSolverMultistepScheduler(
    num_train_timesteps=len(ref.betas),
    trained_betas=ref.betas,
    solver_order=2,
    algorithm_type="sde-dpmsolver++",
    solver_type="midpoint",
    lower_order_final=False,
    final_sigmas_type="sigma_min",
    lambda_min_clipped=-5.1,
  )
  sde.alphas_cumprod, sde.alpha_t, sde.sigma_t = abar, abar.sqrt(), (1 - abar).sqrt()
  sde.lambda_t = th.log(sde.alpha_t) - th.log(sde.sigma_t)
  sde.set_timesteps(STEPS)
  x, states = x_t.clone(), []
  for i, t in enumerate(sde.timesteps):
    x = sde.step(eps(x, t), t, x, variance_noise=noise[i]).prev_sample
    states.append(x)
  out["sde_native"] = th.stack(states)
  out["sde_native_steps"] = np.append(sde.timesteps.numpy(), 0)

  plms = PNDMScheduler(
    num_train_timesteps=len(ref.betas),
    trained_betas=ref.betas,
    skip_prk_steps=True,
    set_alpha_to_one=False,
    steps_offset=1,
  )
  plms.alphas_cumprod, plms.final_alpha_cumprod = abar, abar[0]
  plms.set_timesteps(STEPS - 1)
  x, states = x_t.clone(), []
  for i, t in enumerate(plms.timesteps):
    x = plms.step(eps(x, t), t, x).prev_sample
    if i > 0:
      states.append(x)
  out["plms_native"] = th.stack(states)
  out["plms_native_steps"] = np.append(np.unique(plms.timesteps.numpy())[::-1], 0)


def main():
  th.set_num_threads(2)
  ref = References(import_dpm_solver())
  rng = np.random.RandomState(0)
  shape = (2, 3, 32, 32)
  x_np = rng.randn(*shape).astype(np.float32)
  noise = th.from_numpy(rng.randn(STEPS, *shape).astype(np.float32))
  x_t, y = th.from_numpy(x_np), th.tensor([3, 711])
  out = {"x_T": x_np, "y": y.numpy()}
  guided, cfg, plain = (
    ref.model_fn(y, True),
    ref.model_fn(y, True, cfg=True),
    ref.model_fn(y, False),
  )
  with th.no_grad():
    for ours, skip in SCHEDULES.items():
      solver = ref.solver(guided)
      times = solver.get_time_steps(skip, 1.0, 1.0 / ref.n, STEPS, "cpu")
      out[f"times_{ours}"] = times.numpy()
      for name in DPM:
        out[f"{name}_{ours}"] = dpm_states(ref, guided, name, skip, STEPS, x_t)
      out[f"sde_dpmpp_2m_{ours}"] = sde_states(ref, guided, times, x_t, noise)
      plms_times = solver.get_time_steps(skip, 1.0, 1.0 / ref.n, STEPS - 1, "cpu")
      out[f"plms_{ours}"] = plms_states(ref, guided, plms_times, x_t)
      print(ours, "done", flush=True)
    solver = ref.solver(cfg)
    for name in DPM:
      out[f"{name}_cfg7"] = dpm_states(ref, cfg, name, "time_uniform", SHORT, x_t)
    out["sde_dpmpp_2m_cfg7"] = sde_states(
      ref, cfg, solver.get_time_steps("time_uniform", 1.0, 1.0 / ref.n, SHORT, "cpu"), x_t, noise
    )
    out["plms_cfg7"] = plms_states(
      ref, cfg, solver.get_time_steps("time_uniform", 1.0, 1.0 / ref.n, SHORT - 1, "cpu"), x_t
    )
    out["dpmpp_2m_logsnr_threshold"] = dpm_states(
      ref, plain, "dpmpp_2m", "logSNR", STEPS, x_t, thresholding=True
    )
    native_runs(ref, x_t, noise, y, out)
  out = {
    k: (v.numpy().astype(np.float32) if isinstance(v, th.Tensor) else v) for k, v in out.items()
  }
  for k, v in out.items():
    print(k, v.shape, float(np.abs(v).max()))
  path = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "solver_trajectories_gd_tiny_cond.npz"
  )
  np.savez_compressed(path, **out)
  print("wrote", path, os.path.getsize(path) // 1024, "KiB")


if __name__ == "__main__":
  main()
