"""User-facing errors: one class whose message is printed as a single line by the CLI and the TUI, and the
one way a pydantic validation error becomes such a line (`first_problem`).

Anything raised as `ZslError` is an expected failure (bad input, missing file, unknown name); other
exceptions are bugs and keep their traceback.
"""


class ZslError(Exception):
    """An expected failure with a one-line, human-readable message."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def first_problem(exc, *, names: dict[tuple, str] | None = None, default: str = "body") -> str:
    """`where: reason` for the first problem of a pydantic `ValidationError`, `where` being the name `names`
    gives its location (a flag), else the dotted field path. Every config, command line, request body and
    server reply is reported through this one function."""
    first = exc.errors(include_url=False)[0]
    loc = tuple(str(part) for part in first.get("loc", ()))
    where = (names or {}).get(loc) or ".".join(loc) or default
    message = first["msg"].removeprefix("Value error, ")
    if first.get("type") == "json_invalid":
        return f"not valid JSON: {message}"
    return f"{where}: {message}"
