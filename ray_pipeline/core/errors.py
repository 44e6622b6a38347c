"""Errors: the base of every error whose message is the one line a user sees when a command stops."""


class UserFacingError(Exception):
    """The command cannot do what was asked; str(error) says why, naming the file or field."""


def user_facing_reason(exc: BaseException | None) -> str | None:
    """The reason a user should see, when a stage failed on one (a Chroma server gone, say).

    Ray wraps a task's or actor's exception in classes of its own (made in `ray.exceptions`) that also
    derive from the original class; only the original, raised by this project's code, carries the reason,
    on its first line (Ray Data adds its retry advice below).
    """
    for _ in range(20):
        if exc is None:
            return None
        if isinstance(exc, UserFacingError) and not type(exc).__module__.startswith("ray."):
            return str(exc).split("\n", 1)[0]  # its one line: Ray Data appends lines of its own to a stage's error
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return None
