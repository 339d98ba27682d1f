# Unit tests of the audit trail's hash chain (domain/audit.c): vectors and the verifier's faults.
gb_test(unit test_audit_chain gb_domain)
