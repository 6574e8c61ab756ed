"""The offline `heuristic` provider: extraction without a model, from patterns and keywords.

provider.py fills an ExtractionSpec (fields, dyn_* variables, triggers, recipients, summary); fields.py
finds typed values, choices.py enums and booleans, strings.py text; lexicon.py holds the words and
concepts they share. Typed-value parsing (numbers, phones, emails, dates, times) lives one level up in
services/extractor/values.py, since the LLM path normalises model answers with it too.
"""

from services.extractor.heuristic.provider import PROVIDER, extract

__all__ = ["PROVIDER", "extract"]
