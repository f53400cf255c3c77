"""invite statistics: registrations are counted by the referrer bound at registration

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 18:00:00

A member's invite is its rule number, and a registration through it binds the member as
the newcomer's ``original_referrer_id``, which repair and reassignment never change. So
the registrations per invite are the users whose original referrer is that member; this
index makes a member's count a look-up instead of a scan of every member.
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        'ix_members_original_referrer_id', 'members', ['original_referrer_id']
    )


def downgrade() -> None:
    op.drop_index('ix_members_original_referrer_id', table_name='members')
