"""HTTP requests pods make (Hubble L7 flows, ``http_request`` events) and the rules that read them."""
