"""The agent configuration format (YAML files in a folder) and what the extractor is asked to fill.

The router work owns this module: the full AgentConfig model (flows, conditions, actions), the loader
with file/line errors, the configuration revision, and `extraction_spec(config)` which derives an
ExtractionSpec from a configuration. The extractor reads only ExtractionSpec.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FieldType = Literal["string", "number", "integer", "boolean", "enum", "date", "datetime", "phone", "email"]


class FieldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    type: FieldType
    description: str = ""
    required: bool = False
    values: list[str] | None = Field(None, description="Allowed values of an enum field.")
    examples: list[str] = Field(default_factory=list)


class TriggerSpec(BaseModel):
    """A natural-language condition the extractor answers yes or no."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Stable id the router looks the answer up by (hash of the question).")
    question: str


class RecipientRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    when: str = Field(description="Plain-language description of the calls this recipient should get.")
    to: list[str] = Field(min_length=1)


class RecipientRoute(BaseModel):
    """Seed 001's dynamic recipients: the AI picks among these rules; the fallback is used otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    rules: list[RecipientRule] = Field(min_length=1)
    fallback: list[str] = Field(min_length=1)


class ExtractionSpec(BaseModel):
    """Everything one extraction request must fill for one agent configuration revision."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent_id: str
    config_revision: str
    provider: Literal["heuristic", "openai"] | None = Field(None, description="None: the service default.")
    model: str | None = None
    min_confidence: float = Field(0.5, ge=0, le=1)
    fields: list[FieldSpec] = Field(default_factory=list)
    dynamic_variables: list[str] = Field(default_factory=list, description="dyn_* names used by templates.")
    triggers: list[TriggerSpec] = Field(default_factory=list)
    recipient_routes: list[RecipientRoute] = Field(default_factory=list)
    summary: bool = True
