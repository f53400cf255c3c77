"""remote domains: the trust of other XMPP servers' domains and their registration counts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 18:55:00

Members may come from other XMPP servers (federation). A remote domain's trust (open,
invite-only, blocked) comes from the config unless an admin set it here; the counts of
its registrations (in all, and in the current clock hour) are kept on the same row, so
that checking its limits reads one row instead of counting members.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'remote_domains',
        sa.Column('domain', sa.String(length=255), nullable=False),
        sa.Column('trust', sa.String(length=12), nullable=True),
        sa.Column('trust_set_by', sa.String(length=1023), nullable=True),
        sa.Column('trust_set_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('members', sa.Integer(), nullable=False),
        sa.Column('hour_start', sa.DateTime(timezone=True), nullable=True),
        sa.Column('hour_count', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('domain', name=op.f('pk_remote_domains')),
    )


def downgrade() -> None:
    op.drop_table('remote_domains')
