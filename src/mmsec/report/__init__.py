"""Figures made from results: the labelled example grid of an evasion cell (:mod:`mmsec.report.examples`)."""

from .examples import example_grid

__all__ = ["example_grid"]
