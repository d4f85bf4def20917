"""telemetry: series, raw samples, rollups, alarm rules, states and history

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('series',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scope', sa.String(length=8), nullable=False),
    sa.Column('subject', sa.String(length=64), nullable=False),
    sa.Column('metric', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('host', sa.String(length=63), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('scope', 'subject', 'metric')
    )
    op.create_table('samples',
    sa.Column('series_id', sa.Integer(), nullable=False),
    sa.Column('t', sa.BigInteger(), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['series_id'], ['series.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('series_id', 't')
    )
    op.create_index('ix_samples_t', 'samples', ['t'], unique=False)
    op.create_table('rollups',
    sa.Column('series_id', sa.Integer(), nullable=False),
    sa.Column('step_s', sa.Integer(), nullable=False),
    sa.Column('t', sa.BigInteger(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('total', sa.Float(), nullable=False),
    sa.Column('low', sa.Float(), nullable=False),
    sa.Column('high', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['series_id'], ['series.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('series_id', 'step_s', 't')
    )
    op.create_index('ix_rollups_step_t', 'rollups', ['step_s', 't'], unique=False)
    op.create_table('alarm_rules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('scope', sa.String(length=8), nullable=False),
    sa.Column('target', sa.String(length=63), nullable=True),
    sa.Column('metric', sa.String(length=64), nullable=False),
    sa.Column('comparison', sa.String(length=2), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('for_s', sa.Float(), nullable=False),
    sa.Column('webhook', sa.String(length=1024), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('alarm_states',
    sa.Column('rule_id', sa.Integer(), nullable=False),
    sa.Column('subject', sa.String(length=63), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('breach_since', sa.Float(), nullable=True),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['rule_id'], ['alarm_rules.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('rule_id', 'subject')
    )
    op.create_table('alarm_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rule', sa.String(length=63), nullable=False),
    sa.Column('subject', sa.String(length=63), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('notified', sa.Boolean(), nullable=False),
    sa.Column('notify_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_alarm_events_rule', 'alarm_events', ['rule'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_alarm_events_rule', table_name='alarm_events')
    op.drop_table('alarm_events')
    op.drop_table('alarm_states')
    op.drop_table('alarm_rules')
    op.drop_index('ix_rollups_step_t', table_name='rollups')
    op.drop_table('rollups')
    op.drop_index('ix_samples_t', table_name='samples')
    op.drop_table('samples')
    op.drop_table('series')
