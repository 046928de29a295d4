"""The provider sandbox: a local SendGrid and Twilio speaking their real HTTP APIs and
posting their real signed webhooks, so the official SDKs and the real signature checks
run in every test and in the demo (``relaybook sandbox``; part of ``relaybook up`` when
no provider credentials are configured)."""
