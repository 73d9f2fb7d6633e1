"""Backbones: small hierarchical vision transformers whose stages hold attndsl attention
specs, described in YAML (`attndsl.model.spec`), built as nn.Modules (`net`), trained
(`train`)."""
from .net import BackboneNet, build_model, count_flops, count_parameters, load
from .spec import (Backbone, Stage, backbone_to_dict, canonical_hash, dump_backbone,
                   is_backbone_data, load_backbone)
from .train import Dataset, NonFiniteLoss, Training, evaluate, train

__all__ = ["Backbone", "Stage", "BackboneNet", "build_model", "load", "load_backbone", "dump_backbone",
           "backbone_to_dict", "canonical_hash", "is_backbone_data", "count_parameters",
           "count_flops", "Training", "Dataset", "train", "evaluate", "NonFiniteLoss"]
