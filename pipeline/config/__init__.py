"""One config system: frozen dataclasses loaded from one YAML file plus `key.sub=value` overrides.

Every value is checked when the config is built, in this package and nowhere else: types, enums
(`Literal` fields), ranges (`ge`/`gt`/`le`/`lt` in a field's metadata), paths that must exist or
expand, and the few rules that tie two fields together (`__post_init__` of the section that owns
them). Each problem is one `ConfigError` naming the dotted key, the bad value and what is allowed,
so a typo fails in a second, before a teacher is paid. Stages trust what this package guarantees.

Fields made with `runtime()` are knobs that change how work is done, not what is produced; they
are left out of stage keys so changing them never invalidates cached work. Fields made with
`knob()` are semantic: part of the key of every stage that reads them. `distill config` prints
every field with its type, default and doc, all taken from the dataclasses. The field machinery
(coercion, bounds, the error type) is in pipeline/fields.py.

The modules, each importing only those before it:
- task, teacher, generate, filter, train, eval: one section each (teacher also holds ServeConfig,
  generate SamplingConfig); sections: `Config`, every section together, and the cross-section rules;
- load: YAML and overrides into a `Config`, and the shipped configs (pipeline/configs/);
- keys: `semantic`, the part of a config that goes into stage keys;
- docs: `describe`, the field docs `distill config` prints.

Import from `pipeline.config`: the names below are the package's interface.
"""

from pipeline.config.cut import TRAINED, CutConfig, FeaturesConfig
from pipeline.config.docs import describe
from pipeline.config.filter import CheckName, FilterConfig
from pipeline.config.keys import semantic, to_dict
from pipeline.config.load import (
    load_config,
    parse_override,
    shipped_config,
    shipped_configs,
    trials,
    with_values,
)
from pipeline.config.sections import Config
from pipeline.config.task import TaskConfig
from pipeline.config.teacher import TeacherConfig
from pipeline.config.train import KDConfig, OnPolicyConfig, Scheduler
from pipeline.fields import ConfigError, expand, template_file

__all__ = [
    "CheckName",
    "Config",
    "ConfigError",
    "FilterConfig",
    "KDConfig",
    "TRAINED",
    "OnPolicyConfig",
    "CutConfig",
    "FeaturesConfig",
    "Scheduler",
    "TaskConfig",
    "TeacherConfig",
    "describe",
    "expand",
    "load_config",
    "parse_override",
    "semantic",
    "shipped_config",
    "shipped_configs",
    "template_file",
    "to_dict",
    "trials",
    "with_values",
]
