"""Reasons: the words of a file's failure that say it is not the file's fault, and which failures last.

A failure that comes from the file itself (it cannot be decoded, is empty, a dangling symlink) stays while
the file does, and is remembered; one that hangs on the run's settings or on a passing state is tried again.
"""

from __future__ import annotations

# Reasons that say nothing of the file itself: they hang on this run's settings or a passing state.
PERMISSION_DENIED, READ_ERROR, OUTSIDE_ROOTS = "permission denied", "cannot read file", "resolves outside the allowed folders"
PIXEL_LIMIT = "(--max-pixels)"  # in the reason of a picture refused for its size: a setting, not the file's fault
PREVIEW_LIMIT = "(PREVIEW_MAX_PIXELS)"  # the same, of a thumbnail or a search by photo in the Serve app


def lasting(reason: str) -> bool:
    """Whether a failure comes from the file itself, and stays while the file does: not one that hangs on
    this run's settings (--max-pixels, --within) or on a passing state (a read error, a permission)."""
    return not reason.startswith((PERMISSION_DENIED, READ_ERROR, OUTSIDE_ROOTS)) and PIXEL_LIMIT not in reason
