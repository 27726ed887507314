"""Sparse autoencoders on a frozen network's activations: capture, store, train, evaluate,
interpret."""
