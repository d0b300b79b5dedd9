"""albert-jax: ALBERT pretraining in JAX/Flax, from a laptop CPU to a pod."""
