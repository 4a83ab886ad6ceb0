"""nova-dt-controller: backup choice and claim, protect/unprotect, failover reconciliation."""
