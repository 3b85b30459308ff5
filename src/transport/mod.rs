//! Datagrams in and out: plain UDP now, DTLS beside it later. A transport
//! knows sockets and peers, never CoAP rules: those live in `coap`.

pub mod udp;
