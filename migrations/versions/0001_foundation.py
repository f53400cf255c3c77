"""members, regions, chains, agents, bots, policies, audit log

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 17:42:30.811609
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=1023), nullable=False),
    sa.Column('action', sa.String(length=40), nullable=False),
    sa.Column('target', sa.String(length=1023), nullable=True),
    sa.Column('details', sa.String(length=2000), nullable=True),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_at'), ['at'], unique=False)

    op.create_table('policies',
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('body', sa.String(length=2000), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=1023), nullable=False),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_policies'))
    )
    op.create_table('regions',
    sa.Column('code', sa.String(length=12), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('level', sa.SmallInteger(), nullable=False),
    sa.Column('parent_code', sa.String(length=12), nullable=True),
    sa.Column('lat_e6', sa.Integer(), nullable=False),
    sa.Column('lon_e6', sa.Integer(), nullable=False),
    sa.Column('successor_code', sa.String(length=12), nullable=True),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_regions'))
    )
    with op.batch_alter_table('regions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_regions_parent_code'), ['parent_code'], unique=False)

    op.create_table('rule_counters',
    sa.Column('region_code', sa.String(length=12), nullable=False),
    sa.Column('letter', sa.String(length=1), nullable=False),
    sa.Column('last_seq', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('region_code', 'letter', name=op.f('pk_rule_counters'))
    )
    op.create_table('members',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('jid', sa.String(length=1023), nullable=False),
    sa.Column('rule_number', sa.String(length=32), nullable=False),
    sa.Column('role', sa.String(length=8), nullable=False),
    sa.Column('region_code', sa.String(length=12), nullable=False),
    sa.Column('referrer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('original_referrer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('erased_hash', sa.String(length=64), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('location', sa.String(length=400), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['original_referrer_id'], ['members.id'], name=op.f('fk_members_original_referrer_id_members')),
    sa.ForeignKeyConstraint(['referrer_id'], ['members.id'], name=op.f('fk_members_referrer_id_members')),
    sa.ForeignKeyConstraint(['region_code'], ['regions.code'], name=op.f('fk_members_region_code_regions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_members')),
    sa.UniqueConstraint('jid', name=op.f('uq_members_jid')),
    sa.UniqueConstraint('rule_number', name=op.f('uq_members_rule_number'))
    )
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_members_erased_hash'), ['erased_hash'], unique=False)
        batch_op.create_index(batch_op.f('ix_members_referrer_id'), ['referrer_id'], unique=False)
        batch_op.create_index('ix_members_region_role', ['region_code', 'role'], unique=False)

    op.create_table('agency_links',
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('scope_level', sa.SmallInteger(), nullable=False),
    sa.Column('region_code', sa.String(length=12), nullable=False),
    sa.Column('agent_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.ForeignKeyConstraint(['agent_id'], ['members.id'], name=op.f('fk_agency_links_agent_id_members')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_agency_links_member_id_members')),
    sa.ForeignKeyConstraint(['region_code'], ['regions.code'], name=op.f('fk_agency_links_region_code_regions')),
    sa.PrimaryKeyConstraint('member_id', 'scope_level', name=op.f('pk_agency_links'))
    )
    with op.batch_alter_table('agency_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agency_links_agent_id'), ['agent_id'], unique=False)
        batch_op.create_index('ix_agency_region_scope', ['region_code', 'scope_level'], unique=False)

    op.create_table('agents',
    sa.Column('region_code', sa.String(length=12), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('assigned_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_agents_member_id_members')),
    sa.ForeignKeyConstraint(['region_code'], ['regions.code'], name=op.f('fk_agents_region_code_regions')),
    sa.PrimaryKeyConstraint('region_code', name=op.f('pk_agents'))
    )
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agents_member_id'), ['member_id'], unique=False)

    op.create_table('bots',
    sa.Column('jid', sa.String(length=1023), nullable=False),
    sa.Column('merchant_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['merchant_id'], ['members.id'], name=op.f('fk_bots_merchant_id_members')),
    sa.PrimaryKeyConstraint('jid', name=op.f('pk_bots'))
    )
    with op.batch_alter_table('bots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bots_merchant_id'), ['merchant_id'], unique=False)

    op.create_table('uplines',
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('level', sa.SmallInteger(), nullable=False),
    sa.Column('ancestor_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['ancestor_id'], ['members.id'], name=op.f('fk_uplines_ancestor_id_members')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_uplines_member_id_members')),
    sa.PrimaryKeyConstraint('member_id', 'level', name=op.f('pk_uplines'))
    )
    with op.batch_alter_table('uplines', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_uplines_ancestor_id'), ['ancestor_id'], unique=False)



def downgrade() -> None:
    op.drop_table('audit_log')
    with op.batch_alter_table('uplines', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_uplines_ancestor_id'))

    op.drop_table('uplines')
    with op.batch_alter_table('bots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bots_merchant_id'))

    op.drop_table('bots')
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agents_member_id'))

    op.drop_table('agents')
    with op.batch_alter_table('agency_links', schema=None) as batch_op:
        batch_op.drop_index('ix_agency_region_scope')
        batch_op.drop_index(batch_op.f('ix_agency_links_agent_id'))

    op.drop_table('agency_links')
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.drop_index('ix_members_region_role')
        batch_op.drop_index(batch_op.f('ix_members_referrer_id'))
        batch_op.drop_index(batch_op.f('ix_members_erased_hash'))

    op.drop_table('members')
    op.drop_table('rule_counters')
    with op.batch_alter_table('regions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_regions_parent_code'))

    op.drop_table('regions')
    op.drop_table('policies')
