"""The tenant authority (SPEC §11): the vendor's app asks the ledger to verify the requests
Atlassian sends it and to sign the ones it sends, and never holds a secret itself."""
