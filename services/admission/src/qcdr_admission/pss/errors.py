"""The one error the engine raises for objects it cannot read."""

from __future__ import annotations


class MalformedObjectError(ValueError):
    """A field of the object has the wrong shape (a list where a mapping belongs, a string where a
    boolean belongs, ...). The webhook answers it with a 400; the CLI reports it and exits 2."""

    def __init__(self, path: str, expected: str, got: object) -> None:
        self.path = path
        self.expected = expected
        self.got = type(got).__name__
        super().__init__(f"{path}: expected {expected}, got {self.got}")

    def under(self, prefix: str) -> MalformedObjectError:
        """The same error with its path below ``prefix`` (``spec.template``, ...)."""
        if not prefix:
            return self
        error = MalformedObjectError(f"{prefix}.{self.path}", self.expected, None)
        error.got = self.got
        error.args = (f"{error.path}: expected {self.expected}, got {self.got}",)
        return error
