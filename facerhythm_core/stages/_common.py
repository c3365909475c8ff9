"""What every stage shares: its logger and the UTC start time its provenance records."""

from __future__ import annotations

import datetime as _dt
import logging


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _log(stage: str) -> logging.Logger:
    return logging.getLogger(f"facerhythm.{stage}")
