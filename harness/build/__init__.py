"""Build stage: recipe -> model. Entry point: :func:`build_model`; a model folder ready for
the hub: :func:`save_model_folder`, its card :func:`write_card`."""

from harness.build.builder import BuiltModel, build_model, choose_route, prepare_out_dir
from harness.build.card import write_card
from harness.build.folder import save_model_folder
from harness.build.merge import DonorPool

__all__ = [
    "BuiltModel",
    "DonorPool",
    "build_model",
    "choose_route",
    "prepare_out_dir",
    "save_model_folder",
    "write_card",
]
