//! HTTP/1.1 request heads, query strings, chunked bodies and responses (sans-IO).
