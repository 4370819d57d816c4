"""Dataset readers (one per public layout), splits, phantoms and scribble synthesis."""

from scribmed.data.case import ABDOMINAL, CARDIAC, Case, CaseArrays, ClassMap
from scribmed.data.errors import DataError, SplitError

__all__ = ["ABDOMINAL", "CARDIAC", "Case", "CaseArrays", "ClassMap", "DataError", "SplitError"]
