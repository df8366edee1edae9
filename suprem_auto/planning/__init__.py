"""Experiment planning: the default (nnU-Net-style) planner, SuPreM preset planners, and the plans schema."""
from suprem_auto.planning.default_planner import DEFAULT_PLANS_NAME, plan_default, plan_plain_unet
from suprem_auto.planning.experiment import plan_experiments, resolve_preset_names
from suprem_auto.planning.presets import list_presets, load_preset, plan_preset
from suprem_auto.planning.schema import PLANS_FORMAT_VERSION, PlansError, load_plans, save_plans, validate_plans
from suprem_auto.planning.topology import pool_and_conv_topology
from suprem_auto.planning.overrides import apply_overrides
from suprem_auto.planning.view import ConfigurationPlan, Plans, plans_view

__all__ = ["ConfigurationPlan", "DEFAULT_PLANS_NAME", "Plans", "apply_overrides", "plans_view", "PLANS_FORMAT_VERSION", "PlansError", "list_presets", "load_plans", "load_preset",
           "plan_default", "plan_experiments", "resolve_preset_names", "plan_plain_unet", "plan_preset", "pool_and_conv_topology", "save_plans", "validate_plans"]
