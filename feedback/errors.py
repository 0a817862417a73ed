"""Errors meant for the person at the keyboard: the CLI prints them without a traceback."""


class UserError(Exception):
    """Bad input or a state the user can fix; the message says what and how."""


class PermissionDenied(UserError):
    """The signed-in user's role does not allow this action."""
