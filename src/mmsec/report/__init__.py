"""Figures made from results: the labelled example grid of an evasion cell (:mod:`mmsec.report.examples`) and
galleries of generated samples (:mod:`mmsec.report.gallery`)."""

from .examples import example_grid
from .gallery import sample_gallery

__all__ = ["example_grid", "sample_gallery"]
