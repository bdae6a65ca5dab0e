"""Rollout generation: replicas with continuous batching, the generation phase, dynamic sampling."""
