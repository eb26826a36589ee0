"""The one exception type for mistakes a user can make (a bad key, a missing file, a wrong value).

The CLI prints its message on one line and exits with code 2, without a traceback. Anything else
that goes wrong is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem the user can fix; the message names the key or file and says how."""
