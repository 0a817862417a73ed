"""training rounds

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 15:10:03.754503
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('metrics', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), server_default=sa.text("'[]'"), nullable=False))
        batch_op.create_index('uq_jobs_one_active_training', ['kind'], unique=True, sqlite_where=sa.text("kind = 'train' AND status IN ('queued', 'running')"), postgresql_where=sa.text("kind = 'train' AND status IN ('queued', 'running')"))

    with op.batch_alter_table('policy_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('evaluation', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('policy_versions', schema=None) as batch_op:
        batch_op.drop_column('evaluation')

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('uq_jobs_one_active_training', sqlite_where=sa.text("kind = 'train' AND status IN ('queued', 'running')"), postgresql_where=sa.text("kind = 'train' AND status IN ('queued', 'running')"))
        batch_op.drop_column('metrics')

