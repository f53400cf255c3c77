"""outbox delivery: a claim that can lapse, and the message a notification went out in

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 15:45:00

A notification was marked sent when it was claimed, so a process killed between the
claim and the server's confirmation lost it. Now ``claimed_at`` marks the claim (a claim
older than the lease is taken again by any process), ``message_id`` the message it was
put in (kept when it is sent again, so a repeat has the same id), and ``sent_at`` the
server's confirmation. Rows sent before this migration stay sent.

The index serves the claim: unsent rows in recipient order, so that one recipient's
earnings of a round are claimed together (one message per recipient and round).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild on SQLite): the outbox has no triggers to lose.
    op.add_column('outbox', sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('outbox', sa.Column('message_id', sa.BigInteger(), nullable=True))
    op.create_index('ix_outbox_pending', 'outbox', ['sent_at', 'recipient', 'id'])


def downgrade() -> None:
    op.drop_index('ix_outbox_pending', table_name='outbox')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('message_id')
        batch_op.drop_column('claimed_at')
