"""judgments

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 14:56:30.600096
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('judgments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('constitution_id', sa.Integer(), nullable=False),
    sa.Column('backend', sa.String(length=32), nullable=False),
    sa.Column('model', sa.String(length=255), nullable=False),
    sa.Column('template_version', sa.String(length=32), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('verdict_ab', sa.String(length=8), nullable=True),
    sa.Column('verdict_ba', sa.String(length=8), nullable=True),
    sa.Column('raw', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('input_tokens', sa.Integer(), nullable=True),
    sa.Column('output_tokens', sa.Integer(), nullable=True),
    sa.Column('cost_usd', sa.Float(), nullable=True),
    sa.Column('label_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("outcome IN ('a', 'b', 'tie', 'inconsistent', 'failed')", name=op.f('ck_judgments_outcome')),
    sa.ForeignKeyConstraint(['constitution_id'], ['constitutions.id'], name=op.f('fk_judgments_constitution_id_constitutions')),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_judgments_item_id_items')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_judgments_job_id_jobs')),
    sa.ForeignKeyConstraint(['label_id'], ['labels.id'], name=op.f('fk_judgments_label_id_labels')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_judgments')),
    sa.UniqueConstraint('job_id', 'item_id', name=op.f('uq_judgments_job_id_item_id'))
    )
    with op.batch_alter_table('judgments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_judgments_constitution_id'), ['constitution_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_judgments_item_id'), ['item_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_judgments_job_id'), ['job_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('judgments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_judgments_job_id'))
        batch_op.drop_index(batch_op.f('ix_judgments_item_id'))
        batch_op.drop_index(batch_op.f('ix_judgments_constitution_id'))

    op.drop_table('judgments')
