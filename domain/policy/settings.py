"""Fleet settings that change policy, read from `SettingsChanged` values with safe defaults.

- `breakglass.standing_access` (default `read-only`): on clusters labelled `sensitive=true`,
  what standing (non break-glass) grants still allow: `read-only` = get/list/watch, `none` =
  nothing;
- `breakglass.approver_group` (default `approvers`): whose members may approve break-glass;
- `breakglass.allow_self_approval` (default false): an approver may approve their own request,
  with a mandatory reason;
- `breakglass.max_duration_s` (default 3600) and `breakglass.min_duration_s` (default 60): the
  bounds of a break-glass window, in seconds.

A value of the wrong type or outside its domain falls back to the *safer* choice, not silently
to something permissive: an unknown `standing_access` means `none`, a non-boolean
`allow_self_approval` means false, a non-positive duration means the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import msgspec

SettingValue = str | int | float | bool

STANDING_ACCESS = "breakglass.standing_access"
APPROVER_GROUP = "breakglass.approver_group"
ALLOW_SELF_APPROVAL = "breakglass.allow_self_approval"
MAX_DURATION_S = "breakglass.max_duration_s"
MIN_DURATION_S = "breakglass.min_duration_s"

DEFAULT_MAX_DURATION_S = 3600
DEFAULT_MIN_DURATION_S = 60


class PolicySettings(msgspec.Struct, frozen=True, kw_only=True):
    standing_access: Literal["read-only", "none"] = "read-only"
    approver_group: str = "approvers"
    allow_self_approval: bool = False
    max_duration_s: int = DEFAULT_MAX_DURATION_S
    min_duration_s: int = DEFAULT_MIN_DURATION_S


def _bool(value: SettingValue | None) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return False


def _positive_int(value: SettingValue | None, default: int) -> int:
    if isinstance(value, bool) or value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    return number if number > 0 else default


def policy_settings(values: Mapping[str, SettingValue]) -> PolicySettings:
    """Interpret the raw settings map (missing keys take their defaults)."""
    standing = values.get(STANDING_ACCESS, "read-only")
    group = values.get(APPROVER_GROUP, "approvers")
    max_s = _positive_int(values.get(MAX_DURATION_S), DEFAULT_MAX_DURATION_S)
    min_s = min(_positive_int(values.get(MIN_DURATION_S), DEFAULT_MIN_DURATION_S), max_s)
    return PolicySettings(
        standing_access="read-only" if standing == "read-only" else "none",
        approver_group=group if isinstance(group, str) and group else "approvers",
        allow_self_approval=_bool(values.get(ALLOW_SELF_APPROVAL, False)),
        max_duration_s=max_s,
        min_duration_s=min_s,
    )
