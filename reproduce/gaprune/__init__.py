"""GA pruning (arXiv:1906.00399): multi-objective pruning of LeNet-5 on MNIST by a genetic algorithm."""
