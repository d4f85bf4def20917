"""server groups: affinity and anti-affinity between VMs

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("policy", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("vms") as batch_op:
        batch_op.add_column(sa.Column("group_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_vms_group_id", "groups", ["group_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("vms") as batch_op:
        batch_op.drop_constraint("fk_vms_group_id", type_="foreignkey")
        batch_op.drop_column("group_id")
    op.drop_table("groups")
