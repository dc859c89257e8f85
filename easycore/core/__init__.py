"""The method: AIGN, coreset selection, ACS, models, training modes, the training loop, attacks, evaluation, distributed training."""
