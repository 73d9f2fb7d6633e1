"""Spec language: models (axes), YAML I/O with located errors, and bind-time checks."""
from .bind import BranchPlan, Plan, bind
from .io import dump_spec, load_spec, spec_to_dict
from .models import Spec

__all__ = ["Spec", "load_spec", "dump_spec", "spec_to_dict", "bind", "Plan", "BranchPlan"]
