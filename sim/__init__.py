"""rlhf-sim: a discrete-event simulator of synchronous RLHF on serverless and serverful GPU clusters."""

__version__ = "0.1.0"
