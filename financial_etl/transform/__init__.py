"""Transform stage: the SQLMesh project as a Dagster multi-asset, its checks and previews."""

import os

# SQLMesh forks a pool of model-loading processes unless this is 1: one model needs no
# pool, and forked workers outlive a killed run, 250 MB each. SQLMesh reads it once, when
# it is first imported (sqlmesh.core.constants), and it has no config field for it: so it
# is set here, before this stage's modules import SQLMesh. An operator's own setting wins.
os.environ.setdefault("MAX_FORK_WORKERS", "1")
