"""AMI: the client, the pure live call model and its effects, click-to-call (Originate)."""
