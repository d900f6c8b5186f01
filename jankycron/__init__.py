"""jankycron: scheduled batch jobs whose records land exactly once in the warehouse.

What an analyst imports::

    from jankycron import job, TransientError, SkipRun
"""

from .errors import SkipRun, TransientError
from .job import job

__all__ = ["job", "SkipRun", "TransientError"]
__version__ = "0.1.0"
