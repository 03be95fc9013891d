"""First Order Motion Model family: official teacher, mobile student, deployable parts."""

from compress.families.fomm.family import FommFamily
from compress.families.fomm.teacher import FommModel

__all__ = ["FommFamily", "FommModel"]
