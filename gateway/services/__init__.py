"""The gateway's services, one module per job: chain access, sign-in, record upload, crash
recovery and fetch (on shared record rows), the consent relay, the consents listing, checkpoint
anchoring and record registration."""
