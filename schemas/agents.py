"""The agent configuration format (YAML files in a folder) and what the extractor is asked to fill.

The one import point for agent configuration:

* `schemas.agent_config` — the models (AgentConfig, Flow, conditions, actions, ExtractionSpec, ...),
  the template grammar (`parse_template`) and trigger ids (`trigger_id`);
* `schemas.agent_checks` — the checks that need meaning (operator per field type, template variables);
* `schemas.agent_loader` — `load_catalog(dir) -> Catalog` with file:line problems, the revision (content
  hash of the agent's file), `Catalog.lookup(agent_id, version)`, and `extraction_spec(config)`.

The format is documented in docs/agent-config.md and in `schemas.agent_config`'s docstring.
"""

from __future__ import annotations

from schemas.agent_config import (
    CONDITION_KINDS,
    CONVERSATION_FIELDS,
    EXTRA_VARIABLES,
    SYSTEM_VARIABLES,
    Action,
    AgentConfig,
    AgentFile,
    AiCondition,
    AllCondition,
    AlwaysCondition,
    AnyCondition,
    BusinessHours,
    Condition,
    ConfidenceCondition,
    EmailAction,
    EndReasonCondition,
    ExtractionConfig,
    ExtractionSpec,
    FieldCondition,
    FieldSpec,
    FieldType,
    Flow,
    HttpAction,
    NotCondition,
    RecipientRoute,
    RecipientRule,
    ReviewCondition,
    ScheduleCallAction,
    SlackAction,
    TaskAction,
    TeamAlertAction,
    TemplateSyntaxError,
    TriggerSpec,
    VarRef,
    WebhookAction,
    parse_template,
    template_names,
    trigger_id,
)
from schemas.agent_loader import Catalog, ConfigError, LoadedFile, Problem, extraction_spec, load_catalog

__all__ = [
    "CONDITION_KINDS",
    "CONVERSATION_FIELDS",
    "EXTRA_VARIABLES",
    "SYSTEM_VARIABLES",
    "Action",
    "AgentConfig",
    "AgentFile",
    "AiCondition",
    "AllCondition",
    "AlwaysCondition",
    "AnyCondition",
    "BusinessHours",
    "Catalog",
    "Condition",
    "ConfidenceCondition",
    "ConfigError",
    "EmailAction",
    "EndReasonCondition",
    "ExtractionConfig",
    "ExtractionSpec",
    "FieldCondition",
    "FieldSpec",
    "FieldType",
    "Flow",
    "HttpAction",
    "LoadedFile",
    "NotCondition",
    "Problem",
    "RecipientRoute",
    "RecipientRule",
    "ReviewCondition",
    "ScheduleCallAction",
    "SlackAction",
    "TaskAction",
    "TeamAlertAction",
    "TemplateSyntaxError",
    "TriggerSpec",
    "VarRef",
    "WebhookAction",
    "extraction_spec",
    "load_catalog",
    "parse_template",
    "template_names",
    "trigger_id",
]
