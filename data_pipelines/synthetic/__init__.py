"""A synthetic re-ID world: procedurally drawn people seen by several cameras, written in Market-1501 layout.

Deterministic from the seed. The steps, one module each: world (WorldConfig and presets), people (identities and
cameras), plan (who is seen where, in which split, under which file name), render (one box), write (the files).

CLI: ``python -m data_pipelines.synthetic --out DIR [--preset default|msmt17] [--identities N] [--seed S]``.
"""

from data_pipelines.synthetic.people import make_cameras, make_identities
from data_pipelines.synthetic.plan import Shot, plan_world
from data_pipelines.synthetic.world import PRESETS, WorldConfig, world_config
from data_pipelines.synthetic.write import MANIFEST, ensure_world, generate

__all__ = [
    "MANIFEST",
    "PRESETS",
    "Shot",
    "WorldConfig",
    "ensure_world",
    "generate",
    "make_cameras",
    "make_identities",
    "plan_world",
    "world_config",
]
