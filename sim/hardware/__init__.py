"""Hardware: nodes and topology, storage and host-to-GPU transfers, memory needs of every role."""
