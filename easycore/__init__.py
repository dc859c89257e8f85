"""easycore: coreset selection by sample hardness (average input-gradient norm, AIGN) for adversarial
robustness — the reproducible artifact of "The Easy Path to Robustness" (arXiv 2510.11018)."""
__version__ = "0.1.0"
