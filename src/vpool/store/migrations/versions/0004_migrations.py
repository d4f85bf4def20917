"""live migrations: destination bookings and history

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('migrations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('vm_id', sa.Integer(), nullable=True),
    sa.Column('vm_name', sa.String(length=63), nullable=False),
    sa.Column('vm_uuid', sa.String(length=64), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=True),
    sa.Column('source_host_id', sa.Integer(), nullable=True),
    sa.Column('destination_host_id', sa.Integer(), nullable=True),
    sa.Column('source', sa.String(length=63), nullable=False),
    sa.Column('destination', sa.String(length=63), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('cpus', sa.Integer(), nullable=False),
    sa.Column('memory_mib', sa.Integer(), nullable=False),
    sa.Column('disk_gib', sa.Integer(), nullable=False),
    sa.Column('copy_storage', sa.Boolean(), nullable=False),
    sa.Column('max_downtime_ms', sa.Integer(), nullable=True),
    sa.Column('bandwidth_mib_s', sa.Integer(), nullable=True),
    sa.Column('postcopy', sa.Boolean(), nullable=False),
    sa.Column('iterations', sa.Integer(), nullable=True),
    sa.Column('duration_ms', sa.BigInteger(), nullable=True),
    sa.Column('downtime_ms', sa.BigInteger(), nullable=True),
    sa.Column('memory_bytes', sa.BigInteger(), nullable=True),
    sa.Column('disk_bytes', sa.BigInteger(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['vm_id'], ['vms.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['source_host_id'], ['hosts.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['destination_host_id'], ['hosts.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('migrations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_migrations_vm_id'), ['vm_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_migrations_vm_uuid'), ['vm_uuid'], unique=False)
        batch_op.create_index(batch_op.f('ix_migrations_destination_host_id'), ['destination_host_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_migrations_state'), ['state'], unique=False)


def downgrade() -> None:
    op.drop_table('migrations')
