"""The data layer: datasets, loaders, streaming, the identity of the source files."""
