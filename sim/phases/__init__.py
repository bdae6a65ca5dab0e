"""An iteration and its phases: start-up, generation, inference, streaming, training, weight sync."""
