"""Finding a row the way people name it: by its name, or by its id when the name is a number."""

from sqlalchemy import select


def by_ref(s, model, ref: str):
    """The row whose name is `ref`, else the one whose id it is; None when neither exists."""
    row = s.scalar(select(model).where(model.name == ref))
    if row is None and ref.isdigit():
        row = s.get(model, int(ref))
    return row
