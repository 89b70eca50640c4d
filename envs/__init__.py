"""Gymnasium tool-use environments (installed as `agentrl.envs`)."""
