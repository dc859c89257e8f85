"""The pipeline: run names and paths, the DVC stage commands, groups of runs, code dependencies, report notebooks."""
