"""migrations: the disk a copy-storage migration could not remove, kept until its host is back

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("migrations") as batch_op:
        batch_op.add_column(sa.Column("leftover_host_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("leftover_disk", sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column("leftover_storage", sa.String(length=64), nullable=True))
        batch_op.create_foreign_key("fk_migrations_leftover_host_id", "hosts", ["leftover_host_id"], ["id"],
                                    ondelete="SET NULL")
        batch_op.create_index("ix_migrations_leftover_host_id", ["leftover_host_id"])


def downgrade() -> None:
    with op.batch_alter_table("migrations") as batch_op:
        batch_op.drop_index("ix_migrations_leftover_host_id")
        batch_op.drop_constraint("fk_migrations_leftover_host_id", type_="foreignkey")
        batch_op.drop_column("leftover_storage")
        batch_op.drop_column("leftover_disk")
        batch_op.drop_column("leftover_host_id")
