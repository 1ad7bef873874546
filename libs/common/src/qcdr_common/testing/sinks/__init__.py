"""Local servers that speak each output sink's protocol on 127.0.0.1 (one module per protocol),
recording what they accept and programmable to fail, for the sink tests, fault tests and bench."""
