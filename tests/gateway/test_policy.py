"""gateway/policy.py: defaults <- global <- domain (exact, then the most specific wildcard) <-
user, with the level of each value; directions; bad configuration values."""

from __future__ import annotations

from pathlib import Path

import pytest

from smimekit.config import GatewayConfig, PolicyConfig, load_config
from smimekit.errors import ConfigError
from smimekit.gateway.policy import DEFAULTS, Policy

TOML = """
[gateway]
internal_domains = ["example.org", "*.example.org"]
[gateway.policy]
encrypt = "if-possible"
no_certificate = "clear"
[gateway.domains."*.partner.example"]
encrypt = "always"
no_certificate = "pdf"
[gateway.domains."*.eu.partner.example"]
no_certificate = "bounce"
[gateway.domains."legal.eu.partner.example"]
hcp = "shy"
[gateway.users."Judge@Legal.EU.partner.example"]
encrypt = "never"
"""


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    path = tmp_path / "smimekit.toml"
    path.write_text(TOML)
    config = load_config(path).gateway
    assert config is not None
    return Policy(config)


def test_unset_everywhere_gives_the_built_in_default(policy: Policy) -> None:
    p = policy.resolve("someone@elsewhere.example")
    assert (p.encrypt, p.no_certificate, p.hcp, p.sign) == ("if-possible", "clear", "baseline",
                                                            True)
    assert p.levels["encrypt"] == "global" and p.levels["hcp"] == "default"
    assert p.subject_trigger == DEFAULTS.subject_trigger == "[encrypt]"


def test_wildcard_matches_subdomains_not_the_domain_itself(policy: Policy) -> None:
    assert policy.resolve("a@x.partner.example").encrypt == "always"
    assert policy.resolve("a@partner.example").encrypt == "if-possible"


def test_most_specific_wildcard_then_exact_domain_then_user(policy: Policy) -> None:
    p = policy.resolve("a@de.eu.partner.example")
    assert p.no_certificate == "bounce" and p.levels["no_certificate"] == \
        "domain *.eu.partner.example"
    # the exact domain level replaces the wildcard levels (it does not stack on them)
    exact = policy.resolve("clerk@legal.eu.partner.example")
    assert exact.hcp == "shy" and exact.levels["hcp"] == "domain legal.eu.partner.example"
    assert exact.encrypt == "if-possible" and exact.levels["encrypt"] == "global"
    judge = policy.resolve("<JUDGE@legal.eu.partner.example>")
    assert judge.encrypt == "never" and judge.levels["encrypt"] == \
        "user judge@legal.eu.partner.example"
    assert judge.source("encrypt") == "encrypt=never (user judge@legal.eu.partner.example)"


def test_directions_through_the_trusted_door(policy: Policy) -> None:
    def direction(sender: str, recipient: str) -> str:
        return policy.direction(sender, recipient, trusted=True)

    assert direction("me@example.org", "you@partner.example") == "outbound"
    assert direction("you@partner.example", "me@sales.example.org") == "inbound"
    assert direction("me@example.org", "boss@example.org") == "internal"
    assert direction("a@x.example", "b@y.example") == "relay"
    assert direction("", "me@example.org") == "inbound"  # a bounce to us
    assert direction("me@example.org", "no-domain") == "outbound"


def test_the_public_door_is_outside_whatever_the_sender_claims(policy: Policy) -> None:
    """Review 12 item 1: the envelope sender is a claim; only the door is a fact."""
    assert policy.direction("me@example.org", "you@partner.example") == "relay"
    assert policy.direction("me@example.org", "boss@example.org") == "inbound"
    assert policy.direction("you@partner.example", "me@sales.example.org") == "inbound"
    assert policy.direction("a@x.example", "b@y.example") == "relay"
    assert policy.direction("", "me@example.org") == "inbound"
    assert policy.direction("me@example.org", "no-domain") == "relay"


@pytest.mark.parametrize(("config", "named"), [
    (GatewayConfig(domains={"*": PolicyConfig()}), "gateway.domains"),
    (GatewayConfig(domains={"a.*.example": PolicyConfig()}), "gateway.domains"),
    (GatewayConfig(domains={"x@y.example": PolicyConfig()}), "gateway.domains"),
    (GatewayConfig(domains={"A.example": PolicyConfig(), "a.example": PolicyConfig()}),
     "given twice"),
    (GatewayConfig(users={"nobody": PolicyConfig()}), "gateway.users"),
    (GatewayConfig(users={"*@x.example": PolicyConfig()}), "gateway.users"),
    (GatewayConfig(policy=PolicyConfig(subject_trigger="  ")), "subject_trigger"),
    (GatewayConfig(internal_domains=("example..org",)), "gateway.internal_domains"),
])
def test_bad_levels_are_config_errors_naming_the_key(config: GatewayConfig, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Policy(config)


def test_bad_choice_in_the_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "smimekit.toml"
    path.write_text('[gateway.domains."x.example"]\nencrypt = "sometimes"\n')
    with pytest.raises(ConfigError, match="encrypt"):
        load_config(path)
