"""adm_jax: ADM ("Diffusion Models Beat GANs") and Improved DDPM in JAX/Flax."""

__version__ = "0.1.0"
