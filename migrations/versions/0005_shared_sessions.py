"""state shared by several processes: command sessions, and outbox rounds confirmed by token

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 18:30:00

Behind ejabberd several component processes share one component name, and the next
step of an ad-hoc command, a chat "yes", or the server's answer to a notification
round's ping may reach any of them. ``command_sessions`` keeps a command's pending step
(with an expiry) where every process finds it; ``outbox.claim_token`` names the round
that claimed a row, so that whichever process receives the ping's answer confirms it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild on SQLite): the outbox has no triggers to lose.
    op.add_column('outbox', sa.Column('claim_token', sa.String(length=32), nullable=True))
    op.create_index('ix_outbox_claim_token', 'outbox', ['claim_token'])
    op.create_table(
        'command_sessions',
        sa.Column('key', sa.String(length=1100), nullable=False),
        sa.Column('owner', sa.String(length=1023), nullable=False),
        sa.Column('resource', sa.String(length=1023), nullable=False),
        sa.Column('node', sa.String(length=100), nullable=False),
        sa.Column('step', sa.String(length=20), nullable=False),
        sa.Column('args', sa.String(length=4000), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_command_sessions')),
    )
    op.create_index(
        'ix_command_sessions_expires_at', 'command_sessions', ['expires_at']
    )


def downgrade() -> None:
    op.drop_index('ix_command_sessions_expires_at', table_name='command_sessions')
    op.drop_table('command_sessions')
    op.drop_index('ix_outbox_claim_token', table_name='outbox')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('claim_token')
