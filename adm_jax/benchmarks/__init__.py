"""The benchmark's library (`python -m adm_jax.bench` is its command line): timing of the
production steps, profiles, compiled memory and the comparison with the reference harness."""
