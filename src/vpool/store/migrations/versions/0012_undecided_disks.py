"""migrations: the two disk copies a copy-storage migration holds until it knows which the VM runs on

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("migrations") as batch_op:
        batch_op.add_column(sa.Column("undecided_disks", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("migrations") as batch_op:
        batch_op.drop_column("undecided_disks")
