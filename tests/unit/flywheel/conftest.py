"""The export reads the server's feedback store: the same store fixtures as its own tests."""

from tests.unit.feedback.conftest import add, store

__all__ = ["add", "store"]
