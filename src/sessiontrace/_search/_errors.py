"""The one error a filter or order-by string can raise."""

from __future__ import annotations

__all__ = ["FilterSyntaxError"]


class FilterSyntaxError(ValueError):
    """A filter or ``order_by`` string that cannot be searched with.

    ``position`` is the 0-based index of the character where it went wrong and
    ``text`` the string itself; ``str(error)`` shows the message, the string and a
    caret under that character::

        unknown field 'invalid'; ...
          invalid = 'foo'
          ^
    """

    def __init__(self, message: str, text: str, position: int) -> None:
        self.message = message
        self.text = text
        self.position = max(0, min(position, len(text)))
        super().__init__(self._render())

    def _render(self) -> str:
        # One line of context: control characters would break the caret's alignment.
        shown = "".join(c if c.isprintable() else " " for c in self.text)
        start = 0
        if len(shown) > 120:
            start = max(0, self.position - 60)
            shown = shown[start : start + 120]
        return f"{self.message}\n  {shown}\n  {' ' * (self.position - start)}^"
