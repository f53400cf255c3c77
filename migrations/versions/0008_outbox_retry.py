"""outbox retry: a notification bounced by an unreachable remote server waits, then goes again

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 18:40:00

A notification to a member of another XMPP server is confirmed when our server takes it,
but our server may fail to reach the remote one later and bounce it back. Such a
notification becomes unsent again with ``retry_at`` (not claimed before then) and
``bounces`` (how often it came back: the wait grows with it). Existing rows never
bounced.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild on SQLite): the outbox has no triggers to lose.
    op.add_column('outbox', sa.Column('retry_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        'outbox', sa.Column('bounces', sa.Integer(), nullable=False, server_default='0')
    )


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('bounces')
        batch_op.drop_column('retry_at')
