"""Models: experts, the Markov gate and the mixture."""
