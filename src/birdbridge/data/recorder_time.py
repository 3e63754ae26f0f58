"""When a recording started, from the file name an autonomous recorder gives it.

- AudioMoth: ``YYYYMMDD_HHMMSS.WAV`` (``20240501_053000.WAV``);
- Wildlife Acoustics SM4 / Song Meter: ``PREFIX_YYYYMMDD_HHMMSS.wav`` (``SITE1_20240501_053000.wav``;
  the prefix is the recorder's name and may hold ``_`` or ``-``), and the channel-suffixed
  ``PREFIX_0+1_YYYYMMDD_HHMMSS.wav`` form.

A name whose date or time is not a real one (month 13, 25 o'clock) gives None, as does a
name with no timestamp. The time is the recorder's clock as written: no time zone is
assumed (AudioMoth writes UTC by default, an SM4 its configured local time).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

# the timestamp ends the stem (an optional "_suffix" of letters, e.g. AudioMoth's "_T" files, is tolerated)
_STAMP = re.compile(r"(?:^|[_\-])(\d{8})[_\-T](\d{6})(?:_[A-Za-z]+)?$")


def recording_start(path: str | Path) -> datetime | None:
    """The start time an AudioMoth or SM4 file name gives, or None."""
    m = _STAMP.search(Path(path).stem)
    if m is None:
        return None
    try:
        return datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S")
    except ValueError:
        return None


def absolute_time(start: datetime | None, offset_s: float) -> str:
    """ISO 8601 (``2024-05-01T05:30:03.000``) of ``offset_s`` after ``start``; '' without a start."""
    if start is None:
        return ""
    return (start + timedelta(seconds=offset_s)).isoformat(timespec="milliseconds")


__all__ = ["recording_start", "absolute_time"]
