"""paused jobs: a loop can be paused between phases and resumed later

jobs.status gains 'paused'; jobs gain `pause_requested`, the flag a pause sets for the worker to
see at its next safe point (as `cancel_requested` is for a cancel).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 18:00:00
"""
import sqlalchemy as sa
from alembic import op

OLD_STATUSES = "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')"
NEW_STATUSES = "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted', 'paused')"

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pause_requested', sa.Boolean(), server_default=sa.text('false'),
                                      nullable=False))
        batch_op.drop_constraint(batch_op.f('ck_jobs_status'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_jobs_status'), NEW_STATUSES)


def downgrade() -> None:
    conn = op.get_bind()
    if conn.execute(sa.text("SELECT count(*) FROM jobs WHERE status = 'paused'")).scalar():
        raise RuntimeError("Paused jobs exist; 0008 cannot hold them. Resume or cancel them first.")
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_jobs_status'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_jobs_status'), OLD_STATUSES)
        batch_op.drop_column('pause_requested')
