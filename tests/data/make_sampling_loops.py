"""Writes sampling_loops_gd_tiny_cond.npz: whole sampling loops of the PyTorch reference.

The shared fixtures check single sampler steps; this file holds complete trajectories of
the reference (openai/guided-diffusion) on the fixture set `gd_tiny_cond`, so that a test
can check our loops end to end (respaced timestep maps, step order, guidance inside the loop).

usage (the reference harness's environment, see ../shared/ref-harness/README.md):
  GD_REF=/path/to/guided-diffusion python tests/data/make_sampling_loops.py

Stored (NCHW float32, batch 2, 32x32):
  x_T, y                 initial noise and labels
  (the per-step noise of the ancestral loop is not stored: it is the next 25 draws of the same
  numpy RandomState(0) stream, [25, 2, 3, 32, 32], which the test regenerates)
  ddim_ddim25            DDIM (eta 0) over respacing "ddim25", clip_denoised
  ddim_50                DDIM (eta 0) over respacing "50" (evenly spaced, includes t = 999)
  gddim_ddim25           DDIM with classifier guidance (attention-pool classifier, scale 1)
  gancestral_25          ancestral sampling over respacing "25" with classifier guidance, the
                         i-th step (t = 999 first) drawing the i-th slice of that noise
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


def main():
  th.set_num_threads(2)
  cfg = build.load_config(os.path.join(FIXTURE, "config.json"))
  rng = np.random.RandomState(0)
  shape = (2, 3, 32, 32)
  x_t = rng.randn(*shape).astype(np.float32)
  y = np.array([3, 711])
  step_noise = rng.randn(25, *shape).astype(np.float32)
  out = {"x_T": x_t, "y": y}

  classifier = build.build_classifier(cfg)
  classifier.load_state_dict(th.load(os.path.join(FIXTURE, "classifier.pt")))
  classifier.eval()

  for name, respacing, guided, sampler in [
    ("ddim_ddim25", "ddim25", False, "ddim"),
    ("ddim_50", "50", False, "ddim"),
    ("gddim_ddim25", "ddim25", True, "ddim"),
    ("gancestral_25", "25", True, "ancestral"),
  ]:
    model, diffusion = build.build_model_and_diffusion(cfg, timestep_respacing=respacing)
    model.load_state_dict(th.load(os.path.join(FIXTURE, "unet.pt")))
    model.eval()
    cond_fn, model_fn = build.make_guidance_fns(model, classifier, True, cfg["classifier_scale"])
    kwargs = dict(
      noise=th.from_numpy(x_t),
      clip_denoised=True,
      model_kwargs={"y": th.from_numpy(y)},
      device=th.device("cpu"),
      cond_fn=cond_fn if guided else None,
    )
    with th.no_grad():
      if sampler == "ddim":
        sample = diffusion.ddim_sample_loop(model_fn, shape, eta=0.0, **kwargs)
      else:
        draws = iter(th.from_numpy(step_noise))
        original = th.randn_like
        th.randn_like = lambda x, *a, **k: next(draws)  # the reference's p_sample draws here
        try:
          sample = diffusion.p_sample_loop(model_fn, shape, **kwargs)
        finally:
          th.randn_like = original
    out[name] = sample.numpy().astype(np.float32)
    print(name, float(out[name].mean()), float(out[name].std()))
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sampling_loops_gd_tiny_cond.npz")
  np.savez(path, **out)
  print("wrote", path)


if __name__ == "__main__":
  main()
