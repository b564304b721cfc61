"""DNS stage: MX planning (pure), the aiodns adapter, and per-domain resolution with a host cache."""
