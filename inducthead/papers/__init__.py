"""Paper reproductions: one package per paper (`musat`, `chen`, `wang`, `olsson`), each
with `reproduce(mode="quick" | "full", out_dir=None, device=None, seeds=...)` returning a
`ReproductionResult` (our `.metrics` beside the paper's `.paper` claims).

Layering: above `training` and `dynamics` (a reproduction trains models and analyses their
trajectories), below `sweep` and `cli`.
"""
