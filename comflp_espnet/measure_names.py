"""The names of the correlation measures, importable without numpy: the stage tool checks
``--comflp_measure`` with them in every call, and importing numpy would be a quarter of such a call."""

MEASURES = ("dc", "svcca", "cka", "cosine", "angular")
