"""labelling projects: projects, guidelines, members, K-response items, rank/rating/edit labels

Existing data moves into projects: pairs into `default` (pairwise), single responses (if any)
into `default-binary` (binary), both open to every annotator as the one queue before them was,
each with the old queue settings. Every existing user becomes a member of both.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 11:00:00
"""
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')

OLD_ITEM_KINDS = "kind IN ('pair', 'single')"
NEW_ITEM_KINDS = "kind IN ('pair', 'single', 'rank', 'rating', 'edit')"
OLD_ITEM_SHAPE = ("(kind = 'pair' AND response_b_id IS NOT NULL AND response_b_id <> response_a_id)"
                  " OR (kind = 'single' AND response_b_id IS NULL)")
NEW_ITEM_SHAPE = ("(kind = 'pair' AND response_b_id IS NOT NULL AND response_b_id <> response_a_id)"
                  " OR (kind IN ('single', 'edit', 'rank', 'rating') AND response_b_id IS NULL)")
OLD_LABEL_KINDS = "kind IN ('pairwise', 'binary', 'score')"
NEW_LABEL_KINDS = "kind IN ('pairwise', 'binary', 'score', 'rank', 'rating', 'edit')"
OLD_LABEL_VALUE = ("(kind = 'pairwise' AND choice IS NOT NULL) OR (kind = 'binary' AND thumb IS NOT NULL)"
                   " OR (kind = 'score' AND score IS NOT NULL)")
NEW_LABEL_VALUE = (OLD_LABEL_VALUE + " OR (kind = 'rank' AND ranking IS NOT NULL)"
                   " OR (kind = 'rating' AND ratings IS NOT NULL)"
                   " OR (kind = 'edit' AND edited_text IS NOT NULL AND edit_distance IS NOT NULL)")


def upgrade() -> None:
    op.create_table('projects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('task_type', sa.String(length=16), nullable=False),
    sa.Column('k', sa.Integer(), nullable=False),
    sa.Column('aspects', JSON, nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('open_to_all', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('overlap', sa.Integer(), nullable=False),
    sa.Column('lease_seconds', sa.Integer(), nullable=False),
    sa.Column('prompt_tags', JSON, nullable=False),
    sa.Column('policy_version_ids', JSON, nullable=False),
    sa.Column('refill_below', sa.Integer(), nullable=False),
    sa.Column('refill_prompts', sa.Integer(), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by_id', sa.Integer(), nullable=True),
    sa.CheckConstraint("task_type IN ('pairwise', 'binary', 'rank', 'rating', 'edit')", name=op.f('ck_projects_task_type')),
    sa.CheckConstraint('k >= 1 AND k <= 8', name=op.f('ck_projects_k_range')),
    sa.CheckConstraint('lease_seconds >= 10', name=op.f('ck_projects_lease_min')),
    sa.CheckConstraint('overlap >= 1', name=op.f('ck_projects_overlap_positive')),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_projects_created_by_id_users')),
    sa.ForeignKeyConstraint(['updated_by_id'], ['users.id'], name=op.f('fk_projects_updated_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_projects')),
    sa.UniqueConstraint('name', name=op.f('uq_projects_name'))
    )
    op.create_table('guidelines',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_guidelines_created_by_id_users')),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_guidelines_project_id_projects')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_guidelines')),
    sa.UniqueConstraint('project_id', 'version', name=op.f('uq_guidelines_project_id_version'))
    )
    op.create_index(op.f('ix_guidelines_project_id'), 'guidelines', ['project_id'], unique=False)
    op.create_table('project_members',
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_project_members_project_id_projects')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_project_members_user_id_users')),
    sa.PrimaryKeyConstraint('project_id', 'user_id', name=op.f('pk_project_members'))
    )
    op.create_index(op.f('ix_project_members_user_id'), 'project_members', ['user_id'], unique=False)
    op.create_table('item_responses',
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('response_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_item_responses_item_id_items')),
    sa.ForeignKeyConstraint(['response_id'], ['responses.id'], name=op.f('fk_item_responses_response_id_responses')),
    sa.PrimaryKeyConstraint('item_id', 'position', name=op.f('pk_item_responses')),
    sa.UniqueConstraint('item_id', 'response_id', name=op.f('uq_item_responses_item_id_response_id'))
    )

    _move_existing_data()

    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.alter_column('project_id', existing_type=sa.Integer(), nullable=False)
        batch_op.create_index('ix_items_project_id_id', ['project_id', 'id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_items_project_id_projects'), 'projects', ['project_id'], ['id'])
        batch_op.drop_constraint(batch_op.f('ck_items_kind'), type_='check')
        batch_op.drop_constraint(batch_op.f('ck_items_shape'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_items_kind'), NEW_ITEM_KINDS)
        batch_op.create_check_constraint(batch_op.f('ck_items_shape'), NEW_ITEM_SHAPE)

    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ranking', JSON, nullable=True))
        batch_op.add_column(sa.Column('ratings', JSON, nullable=True))
        batch_op.add_column(sa.Column('edited_text', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('edit_distance', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('shown_permutation', JSON, nullable=True))
        batch_op.add_column(sa.Column('guidelines_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_labels_guidelines_id_guidelines'), 'guidelines',
                                    ['guidelines_id'], ['id'])
        batch_op.drop_constraint(batch_op.f('ck_labels_kind'), type_='check')
        batch_op.drop_constraint(batch_op.f('ck_labels_value'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_labels_kind'), NEW_LABEL_KINDS)
        batch_op.create_check_constraint(batch_op.f('ck_labels_value'), NEW_LABEL_VALUE)

    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('shown_permutation', JSON, nullable=True))
        batch_op.add_column(sa.Column('guidelines_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_assignments_guidelines_id_guidelines'), 'guidelines',
                                    ['guidelines_id'], ['id'])

    op.drop_table('queue_settings')


def _move_existing_data() -> None:
    """Make the default projects, carry the queue settings over and file every item under one."""
    conn = op.get_bind()
    queue_settings = sa.table(  # typed, so the JSON columns come back decoded on SQLite too
        'queue_settings', sa.column('id', sa.Integer), sa.column('overlap', sa.Integer),
        sa.column('lease_seconds', sa.Integer), sa.column('prompt_tags', JSON),
        sa.column('policy_version_ids', JSON), sa.column('refill_below', sa.Integer),
        sa.column('refill_prompts', sa.Integer))
    old = conn.execute(sa.select(*[c for c in queue_settings.c if c.name != 'id'])
                       .where(queue_settings.c.id == 1)).first()
    settings = dict(old._mapping) if old else {"overlap": 1, "lease_seconds": 600, "prompt_tags": [],
                                              "policy_version_ids": [], "refill_below": 4, "refill_prompts": 8}
    projects = sa.table(
        'projects', sa.column('id', sa.Integer), sa.column('name', sa.String), sa.column('task_type', sa.String),
        sa.column('k', sa.Integer), sa.column('aspects', JSON), sa.column('description', sa.Text),
        sa.column('open_to_all', sa.Boolean), sa.column('overlap', sa.Integer),
        sa.column('lease_seconds', sa.Integer), sa.column('prompt_tags', JSON),
        sa.column('policy_version_ids', JSON), sa.column('refill_below', sa.Integer),
        sa.column('refill_prompts', sa.Integer), sa.column('created_at', sa.DateTime(timezone=True)),
        sa.column('updated_at', sa.DateTime(timezone=True)))
    now = datetime.now(UTC)
    has_singles = conn.execute(sa.text("SELECT 1 FROM items WHERE kind = 'single' LIMIT 1")).first() is not None
    wanted = [("default", "pairwise", 2, "pair")] + ([("default-binary", "binary", 1, "single")] if has_singles else [])
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('project_id', sa.Integer(), nullable=True))
    for name, task_type, k, kind in wanted:
        conn.execute(projects.insert().values(
            name=name, task_type=task_type, k=k, aspects=[], open_to_all=True, created_at=now, updated_at=now,
            description="Created when projects arrived: the data labelled before them.", **settings))
        project_id = conn.execute(sa.text("SELECT id FROM projects WHERE name = :n"), {"n": name}).scalar_one()
        conn.execute(sa.text("UPDATE items SET project_id = :p WHERE kind = :k"), {"p": project_id, "k": kind})
        conn.execute(sa.text("INSERT INTO project_members (project_id, user_id, added_at)"
                             " SELECT :p, id, :now FROM users")
                     .bindparams(sa.bindparam("now", type_=sa.DateTime(timezone=True))), {"p": project_id, "now": now})


def downgrade() -> None:
    conn = op.get_bind()
    if conn.execute(sa.text("SELECT 1 FROM items WHERE kind IN ('rank', 'rating', 'edit') LIMIT 1")).first():
        raise RuntimeError("There are rank, rating or edit items; the old schema cannot hold them.")
    op.create_table('queue_settings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('overlap', sa.Integer(), nullable=False),
    sa.Column('lease_seconds', sa.Integer(), nullable=False),
    sa.Column('prompt_tags', JSON, nullable=False),
    sa.Column('policy_version_ids', JSON, nullable=False),
    sa.Column('refill_below', sa.Integer(), nullable=False),
    sa.Column('refill_prompts', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by_id', sa.Integer(), nullable=True),
    sa.CheckConstraint('lease_seconds >= 10', name=op.f('ck_queue_settings_lease_min')),
    sa.CheckConstraint('overlap >= 1', name=op.f('ck_queue_settings_overlap_positive')),
    sa.ForeignKeyConstraint(['updated_by_id'], ['users.id'], name=op.f('fk_queue_settings_updated_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_queue_settings'))
    )
    conn.execute(sa.text(
        "INSERT INTO queue_settings (id, overlap, lease_seconds, prompt_tags, policy_version_ids, refill_below,"
        " refill_prompts, updated_at) SELECT 1, overlap, lease_seconds, prompt_tags, policy_version_ids,"
        " refill_below, refill_prompts, updated_at FROM projects WHERE name = 'default'"))
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_assignments_guidelines_id_guidelines'), type_='foreignkey')
        batch_op.drop_column('guidelines_id')
        batch_op.drop_column('shown_permutation')
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_labels_value'), type_='check')
        batch_op.drop_constraint(batch_op.f('ck_labels_kind'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_labels_kind'), OLD_LABEL_KINDS)
        batch_op.create_check_constraint(batch_op.f('ck_labels_value'), OLD_LABEL_VALUE)
        batch_op.drop_constraint(batch_op.f('fk_labels_guidelines_id_guidelines'), type_='foreignkey')
        for column in ('guidelines_id', 'shown_permutation', 'edit_distance', 'edited_text', 'ratings', 'ranking'):
            batch_op.drop_column(column)
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_items_shape'), type_='check')
        batch_op.drop_constraint(batch_op.f('ck_items_kind'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_items_kind'), OLD_ITEM_KINDS)
        batch_op.create_check_constraint(batch_op.f('ck_items_shape'), OLD_ITEM_SHAPE)
        batch_op.drop_constraint(batch_op.f('fk_items_project_id_projects'), type_='foreignkey')
        batch_op.drop_index('ix_items_project_id_id')
        batch_op.drop_column('project_id')
    op.drop_table('item_responses')
    op.drop_index(op.f('ix_project_members_user_id'), table_name='project_members')
    op.drop_table('project_members')
    op.drop_index(op.f('ix_guidelines_project_id'), table_name='guidelines')
    op.drop_table('guidelines')
    op.drop_table('projects')
