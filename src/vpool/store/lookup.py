"""Finding a row the way people name it: by its name, or by its id when the name is a number."""

from sqlalchemy import select

MAX_ROW_ID = 2**63 - 1


def by_ref(s, model, ref: str):
    """The row whose name is `ref`, else the one whose id it is; None when neither exists."""
    row = s.scalar(select(model).where(model.name == ref))
    if row is None and is_row_id(ref):
        row = s.get(model, int(ref))
    return row


def is_row_id(text: str) -> bool:
    """ASCII digits that fit the database's 64-bit integers ('²' is a digit to Python, but no
    number to int(); a longer one overflows SQLite's INTEGER)."""
    return text.isascii() and text.isdigit() and int(text) <= MAX_ROW_ID
