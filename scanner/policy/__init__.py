"""Domain mail-security policies: MTA-STS (RFC 8461), TLS-RPT (RFC 8460) and DANE TLSA (RFC 7672).

Fetching facts is kept apart from judging them (sslyze's network jobs vs its pure result fold):

- I/O, facts only: ``domain`` (the stage: TXT lookups, :class:`~scanner.policy.domain.PolicyChecker`),
  ``sts_fetch`` (the MTA-STS policy fetch over HTTPS), ``tlsa_lookup`` (TLSA with its DNSSEC status);
- the contract between them: ``facts`` (:class:`~scanner.policy.facts.DomainPolicyFacts`);
- pure: ``judge`` (the one fold over DNS, probe and policy facts), ``mta_sts`` (RFC 8461 §3 grammar and
  the fetched document), ``tlsrpt`` (RFC 8460 §3), ``txt`` (the TXT record grammar both share),
  ``dane`` (TLSA records, matching, the one DANE decision), ``names`` (host-name normalisation).

Nothing is re-exported here, so importing a pure module never loads aiohttp or a DNS client.
"""
