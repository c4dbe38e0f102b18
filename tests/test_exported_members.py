"""The curated public API: __all__ is complete, sorted and importable."""

from __future__ import annotations

import smimekit
import smimekit.cms
import smimekit.errors


def test_all_is_sorted_and_complete() -> None:
    for module in (smimekit, smimekit.cms, smimekit.errors):
        assert module.__all__ == sorted(module.__all__)
        public = {n for n in dir(module) if not n.startswith("_")}
        assert set(module.__all__) <= public


def test_the_recipes_are_exported() -> None:
    for name in ("sign", "verify", "encrypt", "decrypt", "sign_encrypt", "decrypt_verify"):
        assert callable(getattr(smimekit, name))


def test_every_error_derives_from_the_root() -> None:
    for name in smimekit.errors.__all__:
        assert issubclass(getattr(smimekit.errors, name), smimekit.errors.SmimeError)


def test_every_exported_name_resolves() -> None:
    # smimekit and smimekit.cms import their public names on first use (start-up time).
    for module in (smimekit, smimekit.cms):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"
    assert smimekit.Cipher is smimekit.cms.Cipher
    assert smimekit.Verdict.__module__ == "smimekit.validation.verdict"
