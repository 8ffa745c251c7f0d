"""The GPU simulation backend: the imitation engine batched over worlds with MuJoCo Warp.

Modules: ``runtime`` (Warp start-up, kernel cache, device checks), ``batch_model`` (one
MuJoCo Warp model for a batch of subjects), ``control`` (the tracking controller's per-tick math
batched over worlds, pure numpy), ``backend`` (``MjWarpBackend`` and the batch loop). Nothing here
imports Warp at import time except ``backend``'s functions when they run. docs/simulation.md, "GPU
backend".
"""
