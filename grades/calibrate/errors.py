"""The calibration's error: bad input to a tau proposal, with a message that names the field or file."""

from __future__ import annotations

from ..config import ConfigError


class CalibrationError(ConfigError):
    """Bad calibration input; the message names the field or file."""
