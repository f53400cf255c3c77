"""The distribution policy: shares in basis points of the payment and of its pool."""

from __future__ import annotations

from dataclasses import dataclass

BP = 10_000  # basis points in a whole
MAX_LEVELS = 3  # never more; the third only with an explicit override


class PolicyError(ValueError):
    """A policy that must not be used."""


@dataclass(frozen=True)
class Policy:
    """How a payment is split. ``pool_bp`` of the amount is distributed; the referral
    and agent shares are basis points of that pool; the platform gets the rest of the pool.
    The merchant keeps everything outside the pool."""

    pool_bp: int = 1000
    referral_bp: tuple[int, ...] = (3000, 2000)
    agent_bp: tuple[int, int, int] = (1500, 1000, 500)  # district, city, province
    allow_third_level: bool = False

    @property
    def levels(self) -> int:
        """Number of referral levels that earn."""
        return len(self.referral_bp)

    def validate(self) -> None:
        """Raise PolicyError naming what is wrong."""
        if not 0 <= self.pool_bp <= BP:
            raise PolicyError(f"pool_bp must be within 0..{BP}")
        if not 1 <= len(self.referral_bp) <= MAX_LEVELS:
            raise PolicyError("referral_bp must have 1 or 2 levels (3 with allow_third_level)")
        if len(self.referral_bp) == MAX_LEVELS and not self.allow_third_level:
            raise PolicyError("a third referral level needs allow_third_level = true")
        if len(self.agent_bp) != 3:
            raise PolicyError("agent shares must be district, city, province")
        for share in (*self.referral_bp, *self.agent_bp):
            if not 0 <= share <= BP:
                raise PolicyError(f"share {share} must be within 0..{BP} basis points")
        if sum(self.referral_bp) + sum(self.agent_bp) > BP:
            raise PolicyError("referral and agent shares exceed 100% of the pool")

    def as_dict(self) -> dict[str, object]:
        """A JSON-able form (stored with each policy version)."""
        return {
            "pool_bp": self.pool_bp,
            "referral_bp": list(self.referral_bp),
            "agent_bp": list(self.agent_bp),
            "allow_third_level": self.allow_third_level,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Policy:
        """Inverse of as_dict; validates."""
        ref = data["referral_bp"]
        agents = data["agent_bp"]
        assert isinstance(ref, list) and isinstance(agents, list)
        pool = data["pool_bp"]
        assert isinstance(pool, int)
        a = tuple(int(x) for x in agents)
        policy = cls(
            pool_bp=pool,
            referral_bp=tuple(int(x) for x in ref),
            agent_bp=(a[0], a[1], a[2]),
            allow_third_level=bool(data.get("allow_third_level", False)),
        )
        policy.validate()
        return policy
