"""DNS stage: MX planning (pure), the wire codec and stub transport, the resolver, per-domain resolution."""
