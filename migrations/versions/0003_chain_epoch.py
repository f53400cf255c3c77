"""chain epoch: one counter that every change of chains, statuses, bots or policy bumps

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 12:00:00

The payment path reads chains, member statuses, bot links and the policy from a cache
in memory; it reads this counter once per batch and drops the cache when it moved. The
counter is bumped by triggers, so no writer (another process, the CLI, a later feature)
can forget to. Registration only inserts rows of a member that no cache can hold yet, so
inserts into members, uplines and agency_links do not bump it.

SQLite has row triggers only: a set-based update of 100,000 agency links bumps 100,000
times (about 40 ms measured). A later migration that rebuilds one of these tables with
batch_alter_table drops its triggers on SQLite and must create them again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> the changes that bump the epoch
WATCHED: dict[str, tuple[str, ...]] = {
    "members": ("UPDATE", "DELETE"),
    "uplines": ("UPDATE", "DELETE"),
    "agency_links": ("UPDATE", "DELETE"),
    "agents": ("INSERT", "UPDATE", "DELETE"),
    "bots": ("INSERT", "UPDATE", "DELETE"),
    "policies": ("INSERT", "UPDATE", "DELETE"),
}


def upgrade() -> None:
    op.create_table(
        'chain_epoch',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('n', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_chain_epoch')),
    )
    op.execute("INSERT INTO chain_epoch (id, n) VALUES (1, 0)")
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(
            "CREATE FUNCTION bump_chain_epoch() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN UPDATE chain_epoch SET n = n + 1 WHERE id = 1; RETURN NULL; END $$"
        )
    for table, events in WATCHED.items():
        for ev in events:
            name = f"chain_epoch_{table}_{ev.lower()}"
            if postgres:
                op.execute(
                    f"CREATE TRIGGER {name} AFTER {ev} ON {table} "
                    "FOR EACH STATEMENT EXECUTE FUNCTION bump_chain_epoch()"
                )
            else:
                op.execute(
                    f"CREATE TRIGGER {name} AFTER {ev} ON {table} FOR EACH ROW "
                    "BEGIN UPDATE chain_epoch SET n = n + 1 WHERE id = 1; END"
                )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, events in WATCHED.items():
        for ev in events:
            name = f"chain_epoch_{table}_{ev.lower()}"
            op.execute(f"DROP TRIGGER {name} ON {table}" if postgres else f"DROP TRIGGER {name}")
    if postgres:
        op.execute("DROP FUNCTION bump_chain_epoch()")
    op.drop_table('chain_epoch')
