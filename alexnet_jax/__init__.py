"""alexnet_jax: the 2012 AlexNet (Krizhevsky, Sutskever, Hinton) in JAX/Flax."""
