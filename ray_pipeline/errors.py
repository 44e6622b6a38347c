"""Errors: the base of every error whose message is the one line a user sees when a command stops."""


class UserFacingError(Exception):
    """The command cannot do what was asked; str(error) says why, naming the file or field."""
