"""remote hold: the earnings of members of other XMPP servers settle later

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 21:10:00

A payment's earner shares that went to members of remote domains are ``held``: they
settle at the payment's ``held_until`` (``federation.hold_days`` after it, when that is
longer than the policy's hold), and ``held_settled_at`` records when they did. Shares of
local members, the platform and the merchant settle at ``settle_at`` as before. Existing
payments hold nothing: their shares settle as they always did.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild on SQLite): neither table has triggers to lose.
    op.add_column("payments", sa.Column("held_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "payments", sa.Column("held_settled_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "payment_shares",
        sa.Column("held", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index(
        "ix_payments_held_due", "payments", ["held_settled_at", "held_until"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_payments_held_due", table_name="payments")
    with op.batch_alter_table("payment_shares", schema=None) as batch_op:
        batch_op.drop_column("held")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_column("held_settled_at")
        batch_op.drop_column("held_until")
