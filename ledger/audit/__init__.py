"""The audit: replay the registry's events, prove them complete, fold them into the consent
state, and verify every gateway's access log against it.

Modules, in the order an audit runs them:

- ``replay``: the registry's logs fetched and proven complete against the on-chain event digest;
- ``state``: ``ConsentTimeline``, the consent state at any block or ledger position;
- ``export``: the exported access-log document (the leaf format is ``ledger.protocol.access_leaf``);
- ``verify_log``: one log against the chain, phase by phase; ``decisions`` judges each entry;
- ``run``: ``run_audit``, the whole audit; ``report``: what it concludes (findings, verdicts);
- ``federation``: the custody federations of the range and each member's log status;
- ``html_report`` / ``html_timeline`` and ``fhir``: the report as JSON, terminal, HTML, FHIR.
"""
