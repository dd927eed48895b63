"""The error of bad VLM inputs (model directory, processor, examples): :class:`VLMError`."""

from __future__ import annotations


class VLMError(ValueError):
    """Bad VLM inputs (model directory, processor, examples)."""
