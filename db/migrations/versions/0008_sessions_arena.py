"""browser sessions that survive a reload, per-client sign-in limits, arena projects

New table user_sessions (hashed session tokens and one-time tickets); sign_in_failures gain the
client's address; projects gain `arena` (blind head-to-head pairs of two versions); annotator
standings keep the gold answers an annotator undid.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 16:25:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('user_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=True),
    sa.Column('ticket_hash', sa.String(length=64), nullable=True),
    sa.Column('ticket_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('client', sa.String(length=64), nullable=False),
    sa.Column('user_agent', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_reason', sa.String(length=32), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_sessions_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_user_sessions')),
    sa.UniqueConstraint('ticket_hash', name=op.f('uq_user_sessions_ticket_hash')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_user_sessions_token_hash'))
    )
    with op.batch_alter_table('user_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_sessions_user_id'), ['user_id'], unique=False)

    with op.batch_alter_table('sign_in_failures', schema=None) as batch_op:
        batch_op.add_column(sa.Column('client', sa.String(length=64), server_default=sa.text("''"), nullable=False))
        batch_op.create_index('ix_sign_in_failures_client_at', ['client', 'at'], unique=False)

    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('arena', sa.Boolean(), server_default=sa.text('false'), nullable=False))

    with op.batch_alter_table('annotator_standings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('undone_answers', sa.Integer(), server_default=sa.text('0'), nullable=False))
        batch_op.add_column(sa.Column('undone_correct', sa.Integer(), server_default=sa.text('0'), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('annotator_standings', schema=None) as batch_op:
        batch_op.drop_column('undone_correct')
        batch_op.drop_column('undone_answers')

    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_column('arena')

    with op.batch_alter_table('sign_in_failures', schema=None) as batch_op:
        batch_op.drop_index('ix_sign_in_failures_client_at')
        batch_op.drop_column('client')

    with op.batch_alter_table('user_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_sessions_user_id'))

    op.drop_table('user_sessions')
