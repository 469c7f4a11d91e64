"""Where the city workflows plug into the pipelines: one call each for the commands that build an intake."""

from __future__ import annotations

import os

from pipelines.cases.intake import Intake
from pipelines.shops import ShopRegister


def make_warner(settings, intake: Intake, taxonomy, shops: ShopRegister | None = None):
    """The CCTV warner when `cityops.warn.rules` asks for warnings first, else None."""
    warn = settings.cityops.warn
    if not warn.rules:
        return None
    from pipelines.cityops.warnings import Warner

    token = os.environ.get(warn.token_env) if warn.token_env else None
    return Warner(warn, intake, taxonomy, shops=shops, token=token)


def squads_of(grid_path):
    """grid cell code -> its squad (the grid file's `squad` property), for the call-out list."""
    if grid_path is None:
        return lambda cell: None
    from pipelines.grid import read_grid_file

    squads = {f.properties.id: f.properties.squad for f in read_grid_file(grid_path).features}
    return lambda cell: squads.get(cell or "")
