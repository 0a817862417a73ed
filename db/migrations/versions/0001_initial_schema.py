"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-21 14:37:44.525289
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('prompts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('messages', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('reference', sa.Text(), nullable=True),
    sa.Column('split', sa.String(length=8), nullable=False),
    sa.Column('tags', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('source', sa.String(length=255), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("split IN ('train', 'val')", name=op.f('ck_prompts_split')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prompts')),
    sa.UniqueConstraint('content_hash', name=op.f('uq_prompts_content_hash'))
    )
    with op.batch_alter_table('prompts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_prompts_split'), ['split'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('active', sa.Boolean(), server_default=sa.text('(true)'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("role IN ('annotator', 'reviewer', 'admin')", name=op.f('ck_users_role')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=128), nullable=True),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_audit_log_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_at'), ['at'], unique=False)

    op.create_table('constitutions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('principles', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_constitutions_created_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_constitutions')),
    sa.UniqueConstraint('name', 'content_hash', name=op.f('uq_constitutions_name_content_hash')),
    sa.UniqueConstraint('name', 'version', name=op.f('uq_constitutions_name_version'))
    )
    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('config', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('progress_done', sa.Integer(), nullable=False),
    sa.Column('progress_total', sa.Integer(), nullable=True),
    sa.Column('result', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('log_tail', sa.Text(), nullable=False),
    sa.Column('cancel_requested', sa.Boolean(), server_default=sa.text('(false)'), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')", name=op.f('ck_jobs_status')),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_jobs_created_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_status'), ['status'], unique=False)

    op.create_table('snapshots',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('filters', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('n_labels', sa.Integer(), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_snapshots_created_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_snapshots')),
    sa.UniqueConstraint('content_hash', name=op.f('uq_snapshots_content_hash'))
    )
    op.create_table('policy_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('base_model', sa.String(length=255), nullable=False),
    sa.Column('model_path', sa.String(length=1024), nullable=True),
    sa.Column('adapter_path', sa.String(length=1024), nullable=True),
    sa.Column('served_name', sa.String(length=255), nullable=True),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('snapshot_id', sa.Integer(), nullable=True),
    sa.Column('stage', sa.String(length=32), nullable=True),
    sa.Column('train_config', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('metrics', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('candidate', 'active', 'retired', 'rejected')", name=op.f('ck_policy_versions_status')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_policy_versions_job_id_jobs')),
    sa.ForeignKeyConstraint(['parent_id'], ['policy_versions.id'], name=op.f('fk_policy_versions_parent_id_policy_versions')),
    sa.ForeignKeyConstraint(['snapshot_id'], ['snapshots.id'], name=op.f('fk_policy_versions_snapshot_id_snapshots')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_policy_versions')),
    sa.UniqueConstraint('name', name=op.f('uq_policy_versions_name'))
    )
    with op.batch_alter_table('policy_versions', schema=None) as batch_op:
        batch_op.create_index('uq_policy_versions_one_active', ['status'], unique=True, sqlite_where=sa.text("status = 'active'"), postgresql_where=sa.text("status = 'active'"))

    op.create_table('responses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('prompt_id', sa.Integer(), nullable=False),
    sa.Column('policy_version_id', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('params', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=True),
    sa.Column('prompt_tokens', sa.Integer(), nullable=True),
    sa.Column('completion_tokens', sa.Integer(), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=True),
    sa.Column('finish_reason', sa.String(length=32), nullable=True),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_responses_job_id_jobs')),
    sa.ForeignKeyConstraint(['policy_version_id'], ['policy_versions.id'], name=op.f('fk_responses_policy_version_id_policy_versions')),
    sa.ForeignKeyConstraint(['prompt_id'], ['prompts.id'], name=op.f('fk_responses_prompt_id_prompts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_responses'))
    )
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_responses_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_responses_policy_version_id'), ['policy_version_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_responses_prompt_id'), ['prompt_id'], unique=False)

    op.create_table('items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('prompt_id', sa.Integer(), nullable=False),
    sa.Column('response_a_id', sa.Integer(), nullable=False),
    sa.Column('response_b_id', sa.Integer(), nullable=True),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("(kind = 'pair' AND response_b_id IS NOT NULL AND response_b_id <> response_a_id) OR (kind = 'single' AND response_b_id IS NULL)", name=op.f('ck_items_shape')),
    sa.CheckConstraint("kind IN ('pair', 'single')", name=op.f('ck_items_kind')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_items_job_id_jobs')),
    sa.ForeignKeyConstraint(['prompt_id'], ['prompts.id'], name=op.f('fk_items_prompt_id_prompts')),
    sa.ForeignKeyConstraint(['response_a_id'], ['responses.id'], name=op.f('fk_items_response_a_id_responses')),
    sa.ForeignKeyConstraint(['response_b_id'], ['responses.id'], name=op.f('fk_items_response_b_id_responses')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_items'))
    )
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_items_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_items_prompt_id'), ['prompt_id'], unique=False)
        batch_op.create_index('uq_items_pair', ['response_a_id', 'response_b_id'], unique=True, sqlite_where=sa.text("kind = 'pair'"), postgresql_where=sa.text("kind = 'pair'"))
        batch_op.create_index('uq_items_single', ['response_a_id'], unique=True, sqlite_where=sa.text("kind = 'single'"), postgresql_where=sa.text("kind = 'single'"))

    op.create_table('labels',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('choice', sa.String(length=8), nullable=True),
    sa.Column('strength', sa.String(length=8), nullable=True),
    sa.Column('thumb', sa.String(length=4), nullable=True),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('rationale', sa.Text(), nullable=True),
    sa.Column('source', sa.String(length=8), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('producer', sa.String(length=255), nullable=True),
    sa.Column('constitution_id', sa.Integer(), nullable=True),
    sa.Column('provenance', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('shown_order', sa.String(length=2), nullable=True),
    sa.Column('submission_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("(kind = 'pairwise' AND choice IS NOT NULL) OR (kind = 'binary' AND thumb IS NOT NULL) OR (kind = 'score' AND score IS NOT NULL)", name=op.f('ck_labels_value')),
    sa.CheckConstraint("choice IS NULL OR choice IN ('a', 'b', 'tie', 'both_bad')", name=op.f('ck_labels_choice')),
    sa.CheckConstraint("kind IN ('pairwise', 'binary', 'score')", name=op.f('ck_labels_kind')),
    sa.CheckConstraint("shown_order IS NULL OR shown_order IN ('ab', 'ba')", name=op.f('ck_labels_shown_order')),
    sa.CheckConstraint("source <> 'human' OR user_id IS NOT NULL", name=op.f('ck_labels_human_has_user')),
    sa.CheckConstraint("source IN ('human', 'judge', 'grader')", name=op.f('ck_labels_source')),
    sa.CheckConstraint("strength IS NULL OR strength IN ('slight', 'much')", name=op.f('ck_labels_strength')),
    sa.CheckConstraint("thumb IS NULL OR thumb IN ('up', 'down')", name=op.f('ck_labels_thumb')),
    sa.CheckConstraint('score IS NULL OR (score >= 0 AND score <= 1)', name=op.f('ck_labels_score_range')),
    sa.ForeignKeyConstraint(['constitution_id'], ['constitutions.id'], name=op.f('fk_labels_constitution_id_constitutions')),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_labels_item_id_items')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_labels_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_labels')),
    sa.UniqueConstraint('item_id', 'user_id', name=op.f('uq_labels_item_id_user_id')),
    sa.UniqueConstraint('submission_id', name=op.f('uq_labels_submission_id'))
    )
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_labels_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_labels_item_id'), ['item_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_labels_source'), ['source'], unique=False)

    op.create_table('snapshot_labels',
    sa.Column('snapshot_id', sa.Integer(), nullable=False),
    sa.Column('label_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['label_id'], ['labels.id'], name=op.f('fk_snapshot_labels_label_id_labels')),
    sa.ForeignKeyConstraint(['snapshot_id'], ['snapshots.id'], name=op.f('fk_snapshot_labels_snapshot_id_snapshots')),
    sa.PrimaryKeyConstraint('snapshot_id', 'label_id', name=op.f('pk_snapshot_labels'))
    )


def downgrade() -> None:
    op.drop_table('snapshot_labels')
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_labels_source'))
        batch_op.drop_index(batch_op.f('ix_labels_item_id'))
        batch_op.drop_index(batch_op.f('ix_labels_created_at'))

    op.drop_table('labels')
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index('uq_items_single', sqlite_where=sa.text("kind = 'single'"), postgresql_where=sa.text("kind = 'single'"))
        batch_op.drop_index('uq_items_pair', sqlite_where=sa.text("kind = 'pair'"), postgresql_where=sa.text("kind = 'pair'"))
        batch_op.drop_index(batch_op.f('ix_items_prompt_id'))
        batch_op.drop_index(batch_op.f('ix_items_kind'))

    op.drop_table('items')
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_responses_prompt_id'))
        batch_op.drop_index(batch_op.f('ix_responses_policy_version_id'))
        batch_op.drop_index(batch_op.f('ix_responses_job_id'))

    op.drop_table('responses')
    with op.batch_alter_table('policy_versions', schema=None) as batch_op:
        batch_op.drop_index('uq_policy_versions_one_active', sqlite_where=sa.text("status = 'active'"), postgresql_where=sa.text("status = 'active'"))

    op.drop_table('policy_versions')
    op.drop_table('snapshots')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_status'))
        batch_op.drop_index(batch_op.f('ix_jobs_kind'))

    op.drop_table('jobs')
    op.drop_table('constitutions')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_at'))

    op.drop_table('audit_log')
    op.drop_table('users')
    with op.batch_alter_table('prompts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_prompts_split'))

    op.drop_table('prompts')
