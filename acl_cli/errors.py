"""Errors a user can fix. The CLI prints them as one line and exits with status 2."""


class UserError(Exception):
    pass


def one_line(error: BaseException, limit: int = 500) -> str:
    """The message of ``error`` as one line. An error raised in a DataLoader worker comes back as
    "Caught X in DataLoader worker process N" plus the worker's traceback: its last line is the message."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
