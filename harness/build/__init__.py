"""Build stage: recipe -> model. Entry point: :func:`build_model`."""

from harness.build.builder import BuiltModel, build_model, choose_route, prepare_out_dir
from harness.build.merge import DonorPool

__all__ = ["BuiltModel", "DonorPool", "build_model", "choose_route", "prepare_out_dir"]
