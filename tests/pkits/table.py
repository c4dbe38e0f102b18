"""NIST PKITS (2011 re-issue) as data: every signed test message, its PKITS number, and the
settings PKITS.pdf sections 4.8-4.12 give the policy tests.

Source: ``pyca-cryptography-vectors/PKITS_data`` (see its README.corpus.md). The expected
result of a run is the message's name (``Valid``/``Invalid``) under the default settings of
PKITS.pdf section 3 (initial-policy-set any-policy, no initial-explicit-policy, no
initial-policy-mapping-inhibit, no initial-inhibit-any-policy); the policy tests that need
other inputs have one :data:`SUBPARTS` row per setting PKITS lists, with the outcome and the
user-constrained-policy-set PKITS states for it. The subparts were transcribed from the
"Procedure" and "Expected Result" paragraphs of PKITS.pdf (as Chromium's
``net/third_party/nist-pkits/generate_tests.py`` also records them).
"""

from __future__ import annotations

import dataclasses

ANY = "2.5.29.32.0"
P1 = "2.16.840.1.101.3.2.1.48.1"
P2 = "2.16.840.1.101.3.2.1.48.2"
P3 = "2.16.840.1.101.3.2.1.48.3"
P6 = "2.16.840.1.101.3.2.1.48.6"

#: (PKITS number, message name without ``Signed`` and ``.eml``), in PKITS.pdf order.
TESTS: list[tuple[str, str]] = [
    # 4.1
    ("4.1.1", "ValidSignaturesTest1"),
    ("4.1.2", "InvalidCASignatureTest2"),
    ("4.1.3", "InvalidEESignatureTest3"),
    ("4.1.4", "ValidDSASignaturesTest4"),
    ("4.1.5", "ValidDSAParameterInheritanceTest5"),
    ("4.1.6", "InvalidDSASignatureTest6"),
    # 4.2
    ("4.2.1", "InvalidCAnotBeforeDateTest1"),
    ("4.2.2", "InvalidEEnotBeforeDateTest2"),
    ("4.2.3", "Validpre2000UTCnotBeforeDateTest3"),
    ("4.2.4", "ValidGeneralizedTimenotBeforeDateTest4"),
    ("4.2.5", "InvalidCAnotAfterDateTest5"),
    ("4.2.6", "InvalidEEnotAfterDateTest6"),
    ("4.2.7", "Invalidpre2000UTCEEnotAfterDateTest7"),
    ("4.2.8", "ValidGeneralizedTimenotAfterDateTest8"),
    # 4.3
    ("4.3.1", "InvalidNameChainingEETest1"),
    ("4.3.2", "InvalidNameChainingOrderTest2"),
    ("4.3.3", "ValidNameChainingWhitespaceTest3"),
    ("4.3.4", "ValidNameChainingWhitespaceTest4"),
    ("4.3.5", "ValidNameChainingCapitalizationTest5"),
    ("4.3.6", "ValidNameChainingUIDsTest6"),
    ("4.3.7", "ValidRFC3280MandatoryAttributeTypesTest7"),
    ("4.3.8", "ValidRFC3280OptionalAttributeTypesTest8"),
    ("4.3.9", "ValidUTF8StringEncodedNamesTest9"),
    ("4.3.10", "ValidRolloverfromPrintableStringtoUTF8StringTest10"),
    ("4.3.11", "ValidUTF8StringCaseInsensitiveMatchTest11"),
    # 4.4
    ("4.4.1", "MissingCRLTest1"),
    ("4.4.2", "InvalidRevokedCATest2"),
    ("4.4.3", "InvalidRevokedEETest3"),
    ("4.4.4", "InvalidBadCRLSignatureTest4"),
    ("4.4.5", "InvalidBadCRLIssuerNameTest5"),
    ("4.4.6", "InvalidWrongCRLTest6"),
    ("4.4.7", "ValidTwoCRLsTest7"),
    ("4.4.8", "InvalidUnknownCRLEntryExtensionTest8"),
    ("4.4.9", "InvalidUnknownCRLExtensionTest9"),
    ("4.4.10", "InvalidUnknownCRLExtensionTest10"),
    ("4.4.11", "InvalidOldCRLnextUpdateTest11"),
    ("4.4.12", "Invalidpre2000CRLnextUpdateTest12"),
    ("4.4.13", "ValidGeneralizedTimeCRLnextUpdateTest13"),
    ("4.4.14", "ValidNegativeSerialNumberTest14"),
    ("4.4.15", "InvalidNegativeSerialNumberTest15"),
    ("4.4.16", "ValidLongSerialNumberTest16"),
    ("4.4.17", "ValidLongSerialNumberTest17"),
    ("4.4.18", "InvalidLongSerialNumberTest18"),
    ("4.4.19", "ValidSeparateCertificateandCRLKeysTest19"),
    ("4.4.20", "InvalidSeparateCertificateandCRLKeysTest20"),
    ("4.4.21", "InvalidSeparateCertificateandCRLKeysTest21"),
    # 4.5
    ("4.5.1", "ValidBasicSelfIssuedOldWithNewTest1"),
    ("4.5.2", "InvalidBasicSelfIssuedOldWithNewTest2"),
    ("4.5.3", "ValidBasicSelfIssuedNewWithOldTest3"),
    ("4.5.4", "ValidBasicSelfIssuedNewWithOldTest4"),
    ("4.5.5", "InvalidBasicSelfIssuedNewWithOldTest5"),
    ("4.5.6", "ValidBasicSelfIssuedCRLSigningKeyTest6"),
    ("4.5.7", "InvalidBasicSelfIssuedCRLSigningKeyTest7"),
    ("4.5.8", "InvalidBasicSelfIssuedCRLSigningKeyTest8"),
    # 4.6
    ("4.6.1", "InvalidMissingbasicConstraintsTest1"),
    ("4.6.2", "InvalidcAFalseTest2"),
    ("4.6.3", "InvalidcAFalseTest3"),
    ("4.6.4", "ValidbasicConstraintsNotCriticalTest4"),
    ("4.6.5", "InvalidpathLenConstraintTest5"),
    ("4.6.6", "InvalidpathLenConstraintTest6"),
    ("4.6.7", "ValidpathLenConstraintTest7"),
    ("4.6.8", "ValidpathLenConstraintTest8"),
    ("4.6.9", "InvalidpathLenConstraintTest9"),
    ("4.6.10", "InvalidpathLenConstraintTest10"),
    ("4.6.11", "InvalidpathLenConstraintTest11"),
    ("4.6.12", "InvalidpathLenConstraintTest12"),
    ("4.6.13", "ValidpathLenConstraintTest13"),
    ("4.6.14", "ValidpathLenConstraintTest14"),
    ("4.6.15", "ValidSelfIssuedpathLenConstraintTest15"),
    ("4.6.16", "InvalidSelfIssuedpathLenConstraintTest16"),
    ("4.6.17", "ValidSelfIssuedpathLenConstraintTest17"),
    # 4.7
    ("4.7.1", "InvalidkeyUsageCriticalkeyCertSignFalseTest1"),
    ("4.7.2", "InvalidkeyUsageNotCriticalkeyCertSignFalseTest2"),
    ("4.7.3", "ValidkeyUsageNotCriticalTest3"),
    ("4.7.4", "InvalidkeyUsageCriticalcRLSignFalseTest4"),
    ("4.7.5", "InvalidkeyUsageNotCriticalcRLSignFalseTest5"),
    # 4.8
    ("4.8.1", "AllCertificatesSamePolicyTest1"),
    ("4.8.2", "AllCertificatesNoPoliciesTest2"),
    ("4.8.3", "DifferentPoliciesTest3"),
    ("4.8.4", "DifferentPoliciesTest4"),
    ("4.8.5", "DifferentPoliciesTest5"),
    ("4.8.6", "OverlappingPoliciesTest6"),
    ("4.8.7", "DifferentPoliciesTest7"),
    ("4.8.8", "DifferentPoliciesTest8"),
    ("4.8.9", "DifferentPoliciesTest9"),
    ("4.8.10", "AllCertificatesSamePoliciesTest10"),
    ("4.8.11", "AllCertificatesAnyPolicyTest11"),
    ("4.8.12", "DifferentPoliciesTest12"),
    ("4.8.13", "AllCertificatesSamePoliciesTest13"),
    ("4.8.14", "AnyPolicyTest14"),
    ("4.8.15", "UserNoticeQualifierTest15"),
    ("4.8.16", "UserNoticeQualifierTest16"),
    ("4.8.17", "UserNoticeQualifierTest17"),
    ("4.8.18", "UserNoticeQualifierTest18"),
    ("4.8.19", "UserNoticeQualifierTest19"),
    ("4.8.20", "CPSPointerQualifierTest20"),
    # 4.9
    ("4.9.1", "ValidRequireExplicitPolicyTest1"),
    ("4.9.2", "ValidRequireExplicitPolicyTest2"),
    ("4.9.3", "InvalidRequireExplicitPolicyTest3"),
    ("4.9.4", "ValidRequireExplicitPolicyTest4"),
    ("4.9.5", "InvalidRequireExplicitPolicyTest5"),
    ("4.9.6", "ValidSelfIssuedrequireExplicitPolicyTest6"),
    ("4.9.7", "InvalidSelfIssuedrequireExplicitPolicyTest7"),
    ("4.9.8", "InvalidSelfIssuedrequireExplicitPolicyTest8"),
    # 4.10
    ("4.10.1", "ValidPolicyMappingTest1"),
    ("4.10.2", "InvalidPolicyMappingTest2"),
    ("4.10.3", "ValidPolicyMappingTest3"),
    ("4.10.4", "InvalidPolicyMappingTest4"),
    ("4.10.5", "ValidPolicyMappingTest5"),
    ("4.10.6", "ValidPolicyMappingTest6"),
    ("4.10.7", "InvalidMappingFromanyPolicyTest7"),
    ("4.10.8", "InvalidMappingToanyPolicyTest8"),
    ("4.10.9", "ValidPolicyMappingTest9"),
    ("4.10.10", "InvalidPolicyMappingTest10"),
    ("4.10.11", "ValidPolicyMappingTest11"),
    ("4.10.12", "ValidPolicyMappingTest12"),
    ("4.10.13", "ValidPolicyMappingTest13"),
    ("4.10.14", "ValidPolicyMappingTest14"),
    # 4.11
    ("4.11.1", "InvalidinhibitPolicyMappingTest1"),
    ("4.11.2", "ValidinhibitPolicyMappingTest2"),
    ("4.11.3", "InvalidinhibitPolicyMappingTest3"),
    ("4.11.4", "ValidinhibitPolicyMappingTest4"),
    ("4.11.5", "InvalidinhibitPolicyMappingTest5"),
    ("4.11.6", "InvalidinhibitPolicyMappingTest6"),
    ("4.11.7", "ValidSelfIssuedinhibitPolicyMappingTest7"),
    ("4.11.8", "InvalidSelfIssuedinhibitPolicyMappingTest8"),
    ("4.11.9", "InvalidSelfIssuedinhibitPolicyMappingTest9"),
    ("4.11.10", "InvalidSelfIssuedinhibitPolicyMappingTest10"),
    ("4.11.11", "InvalidSelfIssuedinhibitPolicyMappingTest11"),
    # 4.12
    ("4.12.1", "InvalidinhibitAnyPolicyTest1"),
    ("4.12.2", "ValidinhibitAnyPolicyTest2"),
    ("4.12.3", "inhibitAnyPolicyTest3"),
    ("4.12.4", "InvalidinhibitAnyPolicyTest4"),
    ("4.12.5", "InvalidinhibitAnyPolicyTest5"),
    ("4.12.6", "InvalidinhibitAnyPolicyTest6"),
    ("4.12.7", "ValidSelfIssuedinhibitAnyPolicyTest7"),
    ("4.12.8", "InvalidSelfIssuedinhibitAnyPolicyTest8"),
    ("4.12.9", "ValidSelfIssuedinhibitAnyPolicyTest9"),
    ("4.12.10", "InvalidSelfIssuedinhibitAnyPolicyTest10"),
    # 4.13
    ("4.13.1", "ValidDNnameConstraintsTest1"),
    ("4.13.2", "InvalidDNnameConstraintsTest2"),
    ("4.13.3", "InvalidDNnameConstraintsTest3"),
    ("4.13.4", "ValidDNnameConstraintsTest4"),
    ("4.13.5", "ValidDNnameConstraintsTest5"),
    ("4.13.6", "ValidDNnameConstraintsTest6"),
    ("4.13.7", "InvalidDNnameConstraintsTest7"),
    ("4.13.8", "InvalidDNnameConstraintsTest8"),
    ("4.13.9", "InvalidDNnameConstraintsTest9"),
    ("4.13.10", "InvalidDNnameConstraintsTest10"),
    ("4.13.11", "ValidDNnameConstraintsTest11"),
    ("4.13.12", "InvalidDNnameConstraintsTest12"),
    ("4.13.13", "InvalidDNnameConstraintsTest13"),
    ("4.13.14", "ValidDNnameConstraintsTest14"),
    ("4.13.15", "InvalidDNnameConstraintsTest15"),
    ("4.13.16", "InvalidDNnameConstraintsTest16"),
    ("4.13.17", "InvalidDNnameConstraintsTest17"),
    ("4.13.18", "ValidDNnameConstraintsTest18"),
    ("4.13.19", "ValidSelfIssuedDNnameConstraintsTest19"),
    ("4.13.20", "InvalidSelfIssuedDNnameConstraintsTest20"),
    ("4.13.21", "ValidRFC822nameConstraintsTest21"),
    ("4.13.22", "InvalidRFC822nameConstraintsTest22"),
    ("4.13.23", "ValidRFC822nameConstraintsTest23"),
    ("4.13.24", "InvalidRFC822nameConstraintsTest24"),
    ("4.13.25", "ValidRFC822nameConstraintsTest25"),
    ("4.13.26", "InvalidRFC822nameConstraintsTest26"),
    ("4.13.27", "ValidDNandRFC822nameConstraintsTest27"),
    ("4.13.28", "InvalidDNandRFC822nameConstraintsTest28"),
    ("4.13.29", "InvalidDNandRFC822nameConstraintsTest29"),
    ("4.13.30", "ValidDNSnameConstraintsTest30"),
    ("4.13.31", "InvalidDNSnameConstraintsTest31"),
    ("4.13.32", "ValidDNSnameConstraintsTest32"),
    ("4.13.33", "InvalidDNSnameConstraintsTest33"),
    ("4.13.34", "ValidURInameConstraintsTest34"),
    ("4.13.35", "InvalidURInameConstraintsTest35"),
    ("4.13.36", "ValidURInameConstraintsTest36"),
    ("4.13.37", "InvalidURInameConstraintsTest37"),
    ("4.13.38", "InvalidDNSnameConstraintsTest38"),
    # 4.14
    ("4.14.1", "ValiddistributionPointTest1"),
    ("4.14.2", "InvaliddistributionPointTest2"),
    ("4.14.3", "InvaliddistributionPointTest3"),
    ("4.14.4", "ValiddistributionPointTest4"),
    ("4.14.5", "ValiddistributionPointTest5"),
    ("4.14.6", "InvaliddistributionPointTest6"),
    ("4.14.7", "ValiddistributionPointTest7"),
    ("4.14.8", "InvaliddistributionPointTest8"),
    ("4.14.9", "InvaliddistributionPointTest9"),
    ("4.14.10", "ValidNoissuingDistributionPointTest10"),
    ("4.14.11", "InvalidonlyContainsUserCertsCRLTest11"),
    ("4.14.12", "InvalidonlyContainsCACertsCRLTest12"),
    ("4.14.13", "ValidonlyContainsCACertsCRLTest13"),
    ("4.14.14", "InvalidonlyContainsAttributeCertsTest14"),
    ("4.14.15", "InvalidonlySomeReasonsTest15"),
    ("4.14.16", "InvalidonlySomeReasonsTest16"),
    ("4.14.17", "InvalidonlySomeReasonsTest17"),
    ("4.14.18", "ValidonlySomeReasonsTest18"),
    ("4.14.19", "ValidonlySomeReasonsTest19"),
    ("4.14.20", "InvalidonlySomeReasonsTest20"),
    ("4.14.21", "InvalidonlySomeReasonsTest21"),
    ("4.14.22", "ValidIDPwithindirectCRLTest22"),
    ("4.14.23", "InvalidIDPwithindirectCRLTest23"),
    ("4.14.24", "ValidIDPwithindirectCRLTest24"),
    ("4.14.25", "ValidIDPwithindirectCRLTest25"),
    ("4.14.26", "InvalidIDPwithindirectCRLTest26"),
    ("4.14.27", "InvalidcRLIssuerTest27"),
    ("4.14.28", "ValidcRLIssuerTest28"),
    ("4.14.29", "ValidcRLIssuerTest29"),
    ("4.14.30", "ValidcRLIssuerTest30"),
    ("4.14.31", "InvalidcRLIssuerTest31"),
    ("4.14.32", "InvalidcRLIssuerTest32"),
    ("4.14.33", "ValidcRLIssuerTest33"),
    ("4.14.34", "InvalidcRLIssuerTest34"),
    ("4.14.35", "InvalidcRLIssuerTest35"),
    # 4.15
    ("4.15.1", "InvaliddeltaCRLIndicatorNoBaseTest1"),
    ("4.15.2", "ValiddeltaCRLTest2"),
    ("4.15.3", "InvaliddeltaCRLTest3"),
    ("4.15.4", "InvaliddeltaCRLTest4"),
    ("4.15.5", "ValiddeltaCRLTest5"),
    ("4.15.6", "InvaliddeltaCRLTest6"),
    ("4.15.7", "ValiddeltaCRLTest7"),
    ("4.15.8", "ValiddeltaCRLTest8"),
    ("4.15.9", "InvaliddeltaCRLTest9"),
    ("4.15.10", "InvaliddeltaCRLTest10"),
    # 4.16
    ("4.16.1", "ValidUnknownNotCriticalCertificateExtensionTest1"),
    ("4.16.2", "InvalidUnknownCriticalCertificateExtensionTest2"),
]


@dataclasses.dataclass(frozen=True)
class Settings:
    """One PKITS run: the RFC 5280 6.1.1 inputs and what PKITS expects."""

    valid: bool
    initial_policies: tuple[str, ...] | None = None
    """user-initial-policy-set; None is any-policy."""
    explicit: bool = False
    """initial-explicit-policy."""
    inhibit_mapping: bool = False
    """initial-policy-mapping-inhibit."""
    inhibit_any: bool = False
    """initial-any-policy-inhibit."""
    user_policies: tuple[str, ...] | None = None
    """The user-constrained-policy-set PKITS states for a valid run (None: not stated)."""

    @property
    def default(self) -> bool:
        return (self.initial_policies, self.explicit, self.inhibit_mapping, self.inhibit_any) == (
            None,
            False,
            False,
            False,
        )


def _ok(*user: str, **inputs: object) -> Settings:
    return Settings(True, user_policies=user, **inputs)  # type: ignore[arg-type]


def _bad(**inputs: object) -> Settings:
    return Settings(False, **inputs)  # type: ignore[arg-type]


#: PKITS.pdf 4.8-4.12: the runs of the policy tests (every subpart PKITS lists).
SUBPARTS: dict[str, list[Settings]] = {
    "4.8.1": [
        _ok(P1, explicit=True),
        _ok(P1, explicit=True, initial_policies=(P1,)),
        _bad(explicit=True, initial_policies=(P2,)),
        _ok(P1, explicit=True, initial_policies=(P1, P2)),
    ],
    "4.8.2": [_ok(), _bad(explicit=True)],
    "4.8.3": [_ok(), _bad(explicit=True), _bad(explicit=True, initial_policies=(P1, P2))],
    "4.8.4": [_bad()],
    "4.8.5": [_bad()],
    "4.8.6": [_ok(P1), _ok(P1, initial_policies=(P1,)), _bad(initial_policies=(P2,))],
    "4.8.7": [_bad()],
    "4.8.8": [_bad()],
    "4.8.9": [_bad()],
    "4.8.10": [_ok(P1, P2), _ok(P1, initial_policies=(P1,)), _ok(P2, initial_policies=(P2,))],
    "4.8.11": [_ok(ANY), _ok(P1, initial_policies=(P1,))],
    "4.8.12": [_bad()],
    "4.8.13": [
        _ok(P1, initial_policies=(P1,)),
        _ok(P2, initial_policies=(P2,)),
        _ok(P3, initial_policies=(P3,)),
    ],
    "4.8.14": [_ok(P1, initial_policies=(P1,)), _bad(initial_policies=(P2,))],
    "4.8.15": [_ok(P1)],
    "4.8.16": [_ok(P1)],
    "4.8.17": [_ok(P1)],
    "4.8.18": [_ok(P1, initial_policies=(P1,)), _ok(P2, initial_policies=(P2,))],
    "4.8.19": [_ok(P1)],
    "4.8.20": [_ok(P1, explicit=True, initial_policies=(P1,))],
    "4.9.1": [_ok()],
    "4.9.2": [_ok()],
    "4.9.4": [_ok(P1)],
    "4.9.6": [_ok()],
    "4.10.1": [
        _ok(P1, initial_policies=(P1,)),
        _bad(initial_policies=(P2,)),
        _bad(inhibit_mapping=True),
    ],
    "4.10.2": [_bad(), _bad(inhibit_mapping=True)],
    "4.10.3": [_bad(initial_policies=(P1,)), _ok(P2, initial_policies=(P2,))],
    "4.10.5": [_ok(P1, initial_policies=(P1,)), _bad(initial_policies=(P6,))],
    "4.10.6": [_ok(P1, initial_policies=(P1,)), _bad(initial_policies=(P6,))],
    "4.10.9": [_ok(P1)],
    "4.10.11": [_ok(P1)],
    "4.10.12": [_ok(P1, initial_policies=(P1,)), _ok(P2, initial_policies=(P2,))],
    "4.10.13": [
        _ok(P1),
        # PKITS states the outcome for every initial-policy-set ("If the initial-policy-set
        # does not include NIST-test-policy-1 ... the path should be rejected").
        _ok(P1, initial_policies=(P1, P2)),
        _bad(initial_policies=(P2,)),
    ],
    "4.10.14": [_ok(P1)],
    "4.11.2": [_ok(P1)],
    "4.11.4": [_ok(P2)],
    "4.11.7": [_ok(P1)],
    "4.12.2": [_ok(P1)],
    "4.12.3": [_ok(P1), _bad(inhibit_any=True)],
    "4.12.7": [_ok(P1)],
    "4.12.9": [_ok(P1)],
}

#: Sections whose tests are not about policies: every certificate asserts NIST-test-policy-1,
#: so a valid path has the user-constrained-policy-set {NIST-test-policy-1}.
NON_POLICY_SECTIONS = (
    "4.1.",
    "4.2.",
    "4.3.",
    "4.4.",
    "4.5.",
    "4.6.",
    "4.7.",
    "4.13.",
    "4.14.",
    "4.15.",
    "4.16.",
)

#: Tests whose expected failure is a revocation (a CRL says revoked, or no usable CRL).
REVOCATION_FAILURES = frozenset(
    number
    for number, name in TESTS
    if not name.startswith("Valid")
    and (
        number.startswith(("4.4.", "4.14.", "4.15."))
        or number in ("4.5.2", "4.5.5", "4.5.7", "4.7.4", "4.7.5")
    )
)

#: DSA-1024 keys and SHA-1 signatures: refused by smimekit's default policy, so these runs
#: opt into ``allow_legacy`` to exercise path validation itself.
LEGACY = frozenset({"4.1.4", "4.1.5", "4.1.6"})
