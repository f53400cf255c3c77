"""outbox give-up: a notification bounced past the configured time is given up

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 21:10:00

A notification to a member of another XMPP server whose server stays unreachable
bounces again and again. ``first_bounced_at`` is when it first bounced: once
``[federation] give_up_after_seconds`` has passed since then, its next bounce ends it
(``given_up_at``, and ``sent_at`` so that no claim looks at it again). The index
counts the given-up rows for the status and the metrics without reading the table.
Existing rows that wait for a retry have no first bounce recorded: their give-up time
counts from their next bounce.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild on SQLite): the outbox has no triggers to lose.
    op.add_column(
        'outbox', sa.Column('first_bounced_at', sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column('outbox', sa.Column('given_up_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_outbox_given_up', 'outbox', ['given_up_at'])


def downgrade() -> None:
    op.drop_index('ix_outbox_given_up', table_name='outbox')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('given_up_at')
        batch_op.drop_column('first_bounced_at')
