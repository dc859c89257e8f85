"""Adaptive coreset selection (ACS): placeholder until the ACS implementation lands."""
from __future__ import annotations

from .coresets import method


@method("acs_craig", keep="adaptive", kind="adaptive", doc="ACS with CRAIG (Dolatabadi et al. 2022)")
def _acs_craig(*a, **k):
    raise NotImplementedError


@method("acs_gradmatch", keep="adaptive", kind="adaptive", doc="ACS with GradMatch (Dolatabadi et al. 2022)")
def _acs_gradmatch(*a, **k):
    raise NotImplementedError


def schedule_callback(*a, **k):
    raise NotImplementedError("ACS is not implemented yet")
