"""Differentiable neural-architecture search with Gumbel-softmax sampling."""
