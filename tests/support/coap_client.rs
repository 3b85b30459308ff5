//! The test CoAP client: one UDP socket per client, RFC 7252
//! retransmission for CON requests, and bulk senders that push many
//! messages through the daemon from several sockets at once.
//!
//! Why not simply send and wait once: the daemon answers only after its
//! store flushed (docs/ARCHITECTURE.md, invariant 1), and real devices retransmit; a
//! test client that does the same shows how the daemon handles duplicates
//! and slow answers. Messages are built with the codec in coap.rs.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;

use super::coap::{block1, Block, Code, DecodeError, Message, MsgType};
use super::WAIT;

/// RFC 7252 §4.8 transmission parameters for CON retransmission.
#[derive(Debug, Clone, Copy)]
pub struct Transmission {
    pub ack_timeout: Duration,
    pub ack_random_factor: f64,
    pub max_retransmit: u32,
    /// How long to wait for a separate response after an empty ACK.
    pub separate_response_timeout: Duration,
}

impl Default for Transmission {
    /// The RFC's defaults: 2 s, 1.5, 4 (a CON gives up after up to 93 s).
    fn default() -> Transmission {
        Transmission {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
            separate_response_timeout: WAIT,
        }
    }
}

/// What a confirmable exchange ended with.
#[derive(Debug, Clone)]
pub struct ConOutcome {
    pub request: Message,
    /// The piggybacked or separate response, an RST, or, if the separate
    /// response never came, the empty ACK. `None`: no answer at all.
    pub response: Option<Message>,
    /// Sends beyond the first.
    pub retransmissions: u32,
}

impl ConOutcome {
    /// The response code if it is a real response (not an empty ACK/RST).
    pub fn code(&self) -> Option<Code> {
        self.response
            .as_ref()
            .map(|r| r.code)
            .filter(|c| *c != Code::EMPTY)
    }

    /// Acknowledged with 2.xx.
    pub fn is_success(&self) -> bool {
        self.code().is_some_and(Code::is_success)
    }
}

/// A CoAP client on its own UDP socket talking to one server.
pub struct CoapClient {
    socket: UdpSocket,
    server: SocketAddr,
    next_mid: u16,
    transmission: Transmission,
}

impl CoapClient {
    /// Binds 127.0.0.1:0, so every client has its own source port.
    pub fn new(server: SocketAddr) -> CoapClient {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket for the CoAP client");
        CoapClient {
            socket,
            server,
            next_mid: rand::random(),
            transmission: Transmission::default(),
        }
    }

    pub fn with_transmission(mut self, transmission: Transmission) -> CoapClient {
        self.transmission = transmission;
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .expect("local_addr of the CoAP client socket")
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    pub fn next_mid(&mut self) -> u16 {
        self.next_mid = self.next_mid.wrapping_add(1);
        self.next_mid
    }

    /// A random 4-byte token.
    pub fn new_token(&self) -> Vec<u8> {
        rand::random::<[u8; 4]>().to_vec()
    }

    /// A request with a fresh message id and token.
    pub fn build<S: AsRef<str>>(
        &mut self,
        mtype: MsgType,
        code: Code,
        path: &[S],
        payload: &[u8],
    ) -> Message {
        let mid = self.next_mid();
        let token = self.new_token();
        Message::new(mtype, code, mid, &token)
            .with_path(path)
            .with_payload(payload)
    }

    pub fn send(&self, message: &Message) {
        self.send_raw(&message.encode());
    }

    /// Sends any bytes, e.g. a malformed datagram.
    pub fn send_raw(&self, bytes: &[u8]) {
        self.socket
            .send_to(bytes, self.server)
            .unwrap_or_else(|e| panic!("send {} bytes to {}: {e}", bytes.len(), self.server));
    }

    /// The next datagram from the server within `timeout`.
    pub fn recv_raw(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buffer = vec![0u8; 65536];
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())?;
            self.socket
                .set_read_timeout(Some(left))
                .expect("set a UDP read timeout");
            match self.socket.recv_from(&mut buffer) {
                Ok((n, from)) if from == self.server => return Some(buffer[..n].to_vec()),
                Ok(_) => continue,
                // Timeouts, and ICMP errors surfacing on Linux.
                Err(_) => continue,
            }
        }
    }

    /// The next datagram from the server, decoded.
    pub fn recv(&self, timeout: Duration) -> Option<Result<Message, DecodeError>> {
        self.recv_raw(timeout).map(|bytes| Message::decode(&bytes))
    }

    /// Sends `request` once and waits up to `timeout` for its answer:
    /// an ACK/RST with its message id, or a CON/NON response with its
    /// token. After an empty ACK it keeps waiting for the separate
    /// response and returns the empty ACK if none comes.
    pub fn request(&mut self, request: &Message, timeout: Duration) -> Option<Message> {
        self.send(request);
        let deadline = Instant::now() + timeout;
        let mut empty_ack = None;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(response) = self.recv_matching(request, left) else {
                break;
            };
            if response.mtype == MsgType::Ack && response.code == Code::EMPTY {
                empty_ack = Some(response);
                continue;
            }
            return Some(response);
        }
        empty_ack
    }

    /// POST as CON to `path`, with RFC 7252 retransmission.
    pub fn con<S: AsRef<str>>(&mut self, path: &[S], payload: &[u8]) -> ConOutcome {
        let request = self.build(MsgType::Con, Code::POST, path, payload);
        self.con_request(request)
    }

    /// Sends a CON request, retransmitting the same bytes with exponential
    /// back-off (initial timeout random in [ACK_TIMEOUT, ACK_TIMEOUT *
    /// ACK_RANDOM_FACTOR], doubled each time, MAX_RETRANSMIT times).
    pub fn con_request(&mut self, request: Message) -> ConOutcome {
        assert_eq!(
            request.mtype,
            MsgType::Con,
            "con_request needs a CON message"
        );
        let t = self.transmission;
        let bytes = request.encode();
        let factor = rand::thread_rng().gen_range(1.0..=t.ack_random_factor.max(1.0));
        let mut timeout = t.ack_timeout.mul_f64(factor);
        for attempt in 0..=t.max_retransmit {
            self.send_raw(&bytes);
            if let Some(response) = self.recv_matching(&request, timeout) {
                let response = if response.mtype == MsgType::Ack && response.code == Code::EMPTY {
                    // Separate response: stop retransmitting, wait for it.
                    self.await_separate(&request, t.separate_response_timeout)
                        .or(Some(response))
                } else {
                    Some(response)
                };
                return ConOutcome {
                    request,
                    response,
                    retransmissions: attempt,
                };
            }
            timeout *= 2;
        }
        ConOutcome {
            request,
            response: None,
            retransmissions: t.max_retransmit,
        }
    }

    /// Sends a NON POST and does not wait for anything.
    pub fn non<S: AsRef<str>>(&mut self, path: &[S], payload: &[u8]) -> Message {
        let request = self.build(MsgType::Non, Code::POST, path, payload);
        self.send(&request);
        request
    }

    /// CoAP ping: an empty CON, which a live endpoint answers with RST.
    pub fn ping(&mut self, timeout: Duration) -> bool {
        let mid = self.next_mid();
        let ping = Message::empty(MsgType::Con, mid);
        matches!(self.request(&ping, timeout), Some(m) if m.mtype == MsgType::Rst)
    }

    /// A block-wise POST (RFC 7959 Block1) of `payload` in blocks of
    /// `2^(szx+4)` bytes, each block a CON with retransmission and a fresh
    /// token. Stops after the first block that is not answered with 2.31
    /// (or, for the last block, after its answer). Returns every exchange.
    pub fn post_blockwise<S: AsRef<str>>(
        &mut self,
        path: &[S],
        payload: &[u8],
        szx: u8,
    ) -> Vec<ConOutcome> {
        let size = Block {
            num: 0,
            more: false,
            szx,
        }
        .size();
        let blocks: Vec<&[u8]> = if payload.is_empty() {
            vec![&[][..]]
        } else {
            payload.chunks(size).collect()
        };
        let mut outcomes = Vec::new();
        for (num, chunk) in blocks.iter().enumerate() {
            let more = num + 1 < blocks.len();
            let request = self
                .build(MsgType::Con, Code::POST, path, chunk)
                .with_options([block1(num as u32, more, szx)]);
            let outcome = self.con_request(request);
            let go_on = outcome.code() == Some(Code::CONTINUE);
            outcomes.push(outcome);
            if !(more && go_on) {
                break;
            }
        }
        outcomes
    }

    /// The next decodable message answering `request`, within `timeout`.
    fn recv_matching(&self, request: &Message, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let Ok(message) = self.recv(left)? else {
                continue;
            };
            // A piggybacked response answers this request only if it also
            // carries its token (RFC 7252 §5.3.2): under a reused Message ID
            // another exchange's answer must not pass for this one's.
            let by_mid = matches!(message.mtype, MsgType::Ack | MsgType::Rst)
                && message.mid == request.mid
                && (message.code == Code::EMPTY || message.token == request.token);
            let by_token = matches!(message.mtype, MsgType::Con | MsgType::Non)
                && message.code != Code::EMPTY
                && message.token == request.token;
            if by_token && message.mtype == MsgType::Con {
                self.send(&Message::empty(MsgType::Ack, message.mid));
            }
            if by_mid || by_token {
                return Some(message);
            }
        }
    }

    fn await_separate(&self, request: &Message, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let message = self.recv_matching(request, left)?;
            if matches!(message.mtype, MsgType::Con | MsgType::Non) {
                return Some(message);
            }
        }
    }
}

/// What [`send_con_stream`] achieved.
#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    /// Messages answered with 2.xx, in the order the answers arrived
    /// (across all senders), with the code.
    pub acked: Vec<(usize, Code)>,
    /// Every other message, sorted by index: no answer, RST, or not 2.xx.
    pub failed: Vec<usize>,
    /// The subset of `failed` that got a non-2.xx response, with its code.
    pub rejected: Vec<(usize, Code)>,
    pub retransmissions: u64,
}

impl StreamReport {
    /// Indexes of acknowledged messages, sorted.
    pub fn acked_indexes(&self) -> Vec<usize> {
        let mut indexes: Vec<usize> = self.acked.iter().map(|(i, _)| *i).collect();
        indexes.sort_unstable();
        indexes
    }
}

/// Sends messages `0..n` as CON POSTs from `concurrency` sockets, one
/// outstanding request per socket, with RFC default retransmission.
/// `message(i)` gives the Uri-Path segments and payload of message `i`.
pub fn send_con_stream<F>(
    server: SocketAddr,
    n: usize,
    concurrency: usize,
    message: F,
) -> StreamReport
where
    F: Fn(usize) -> (Vec<String>, Vec<u8>) + Sync,
{
    send_con_stream_with(server, n, concurrency, Transmission::default(), message)
}

/// [`send_con_stream`] with other transmission parameters.
pub fn send_con_stream_with<F>(
    server: SocketAddr,
    n: usize,
    concurrency: usize,
    transmission: Transmission,
    message: F,
) -> StreamReport
where
    F: Fn(usize) -> (Vec<String>, Vec<u8>) + Sync,
{
    let next = AtomicUsize::new(0);
    let report = Mutex::new(StreamReport::default());
    std::thread::scope(|scope| {
        for _ in 0..concurrency.max(1) {
            scope.spawn(|| {
                let mut client = CoapClient::new(server).with_transmission(transmission);
                loop {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    if index >= n {
                        break;
                    }
                    let (path, payload) = message(index);
                    let outcome = client.con(&path, &payload);
                    let mut report = report.lock().expect("stream report lock");
                    report.retransmissions += u64::from(outcome.retransmissions);
                    match outcome.code() {
                        Some(code) if code.is_success() => report.acked.push((index, code)),
                        Some(code) => {
                            report.rejected.push((index, code));
                            report.failed.push(index);
                        }
                        None => report.failed.push(index),
                    }
                }
            });
        }
    });
    let mut report = report.into_inner().expect("stream report lock");
    report.failed.sort_unstable();
    report.rejected.sort_unstable_by_key(|(i, _)| *i);
    report
}

/// Sends messages `0..n` as NON POSTs from one socket without waiting for
/// anything; returns the messages sent.
pub fn send_non_stream<F>(server: SocketAddr, n: usize, message: F) -> Vec<Message>
where
    F: Fn(usize) -> (Vec<String>, Vec<u8>),
{
    let mut client = CoapClient::new(server);
    (0..n)
        .map(|i| {
            let (path, payload) = message(i);
            client.non(&path, &payload)
        })
        .collect()
}
