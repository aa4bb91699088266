"""Build stage (merge, then optional alignment): recipe -> model. Named after what it does
(``harness/build/`` was taken for build output by packagers and editors). Entry point: :func:`build_model`; a model folder ready for
the hub: :func:`save_model_folder`, its card :func:`write_card`."""

from harness.merge.builder import BuiltModel, build_model, choose_route, prepare_out_dir
from harness.merge.card import write_card
from harness.merge.folder import save_model_folder
from harness.merge.routes import DonorPool

__all__ = [
    "BuiltModel",
    "DonorPool",
    "build_model",
    "choose_route",
    "prepare_out_dir",
    "save_model_folder",
    "write_card",
]
