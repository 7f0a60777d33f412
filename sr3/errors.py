"""The one exception type for a user's mistake.

Anything raised as :class:`UserError` is printed by the CLI as a single line
(``sr3: error: ...``) with a non-zero exit and no traceback.  Bugs stay ordinary
exceptions so they keep their traceback.
"""


class UserError(Exception):
    """A problem the user can fix: bad path, corrupt image, wrong config.

    The message should name the file (if any), the cause and the fix.
    """
