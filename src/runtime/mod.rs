//! monoio glue: worker threads, connections, cross-core bus, publish ingress.
