"""Training: optimizer, mesh and sharding, train step, initial state,
checkpoints, metrics, the loop."""
