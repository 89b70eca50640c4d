"""Episodes, the rollout scheduler and the virtual clock."""
