"""The experiment configs (one file each); installed as adm_jax.configs so that `--config=NAME`
works anywhere."""
