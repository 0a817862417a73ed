"""label quality: gold answers and adjudications, annotator standings, queue order

New tables item_decisions (an item's final answer: gold, adjudicated, or an attention check's) and
annotator_standings (ok / warned / paused per project, from gold answers); projects gain their
gold settings and queue order, items a queue key. Existing projects keep their behaviour: no gold
served (rate 0), oldest first.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 13:24:27
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('annotator_standings',
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('gold_answers', sa.Integer(), nullable=False),
    sa.Column('gold_correct', sa.Integer(), nullable=False),
    sa.Column('counted_from', sa.DateTime(timezone=True), nullable=True),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('changed_by_id', sa.Integer(), nullable=True),
    sa.CheckConstraint("status IN ('ok', 'warned', 'paused')", name=op.f('ck_annotator_standings_status')),
    sa.ForeignKeyConstraint(['changed_by_id'], ['users.id'], name=op.f('fk_annotator_standings_changed_by_id_users')),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_annotator_standings_project_id_projects')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_annotator_standings_user_id_users')),
    sa.PrimaryKeyConstraint('project_id', 'user_id', name=op.f('pk_annotator_standings'))
    )
    op.create_table('item_decisions',
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('origin', sa.String(length=16), nullable=False),
    sa.Column('gold', sa.Boolean(), nullable=False),
    sa.Column('choice', sa.String(length=8), nullable=True),
    sa.Column('thumb', sa.String(length=4), nullable=True),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('decided_by_id', sa.Integer(), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("choice IS NULL OR choice IN ('a', 'b', 'tie', 'both_bad')", name=op.f('ck_item_decisions_choice')),
    sa.CheckConstraint("origin <> 'attention' OR gold", name=op.f('ck_item_decisions_attention_is_gold')),
    sa.CheckConstraint("origin IN ('gold', 'adjudication', 'attention')", name=op.f('ck_item_decisions_origin')),
    sa.CheckConstraint("thumb IS NULL OR thumb IN ('up', 'down')", name=op.f('ck_item_decisions_thumb')),
    sa.CheckConstraint('(choice IS NULL) <> (thumb IS NULL)', name=op.f('ck_item_decisions_one_value')),
    sa.ForeignKeyConstraint(['decided_by_id'], ['users.id'], name=op.f('fk_item_decisions_decided_by_id_users')),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_item_decisions_item_id_items')),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_item_decisions_project_id_projects')),
    sa.PrimaryKeyConstraint('item_id', name=op.f('pk_item_decisions'))
    )
    with op.batch_alter_table('item_decisions', schema=None) as batch_op:
        batch_op.create_index('ix_item_decisions_project_gold', ['project_id', 'gold'], unique=False)

    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('queue_key', sa.Float(), server_default=sa.text('0'), nullable=False))
        batch_op.create_index('ix_items_project_id_queue_key', ['project_id', 'queue_key', 'id'], unique=False)

    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gold_rate', sa.Float(), server_default=sa.text('0'), nullable=False))
        batch_op.add_column(sa.Column('gold_min_accuracy', sa.Float(), server_default=sa.text('(0.7)'), nullable=False))
        batch_op.add_column(sa.Column('gold_min_answers', sa.Integer(), server_default=sa.text('5'), nullable=False))
        batch_op.add_column(sa.Column('queue_order', sa.String(length=16), server_default=sa.text("'oldest'"), nullable=False))
        batch_op.create_check_constraint(batch_op.f('ck_projects_gold_rate_range'), 'gold_rate >= 0 AND gold_rate <= 1')
        batch_op.create_check_constraint(batch_op.f('ck_projects_gold_accuracy_range'), 'gold_min_accuracy >= 0 AND gold_min_accuracy <= 1')
        batch_op.create_check_constraint(batch_op.f('ck_projects_gold_answers_positive'), 'gold_min_answers >= 1')
        batch_op.create_check_constraint(batch_op.f('ck_projects_queue_order'), "queue_order IN ('oldest', 'random', 'uncertainty')")



def downgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        for name in ('queue_order', 'gold_answers_positive', 'gold_accuracy_range', 'gold_rate_range'):
            batch_op.drop_constraint(batch_op.f(f'ck_projects_{name}'), type_='check')
        batch_op.drop_column('queue_order')
        batch_op.drop_column('gold_min_answers')
        batch_op.drop_column('gold_min_accuracy')
        batch_op.drop_column('gold_rate')

    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index('ix_items_project_id_queue_key')
        batch_op.drop_column('queue_key')

    with op.batch_alter_table('item_decisions', schema=None) as batch_op:
        batch_op.drop_index('ix_item_decisions_project_gold')

    op.drop_table('item_decisions')
    op.drop_table('annotator_standings')
