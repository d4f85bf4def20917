"""storage of hosts and VMs: VMs move only to hosts that see their disk

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch_op:
        batch_op.add_column(sa.Column("storage", sa.String(length=64), nullable=True))
    with op.batch_alter_table("vms") as batch_op:
        batch_op.add_column(sa.Column("storage", sa.String(length=64), nullable=True))


def downgrade() -> None:
    for table in ("vms", "hosts"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("storage")
