//! A small TURN client over real sockets for the shell's tests.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard::turn::{TurnService, TurnSettings};
use switchboard_stun::attr::{ErrorCode, Nonce, Realm, RequestedTransport, XorRelayedAddress};
use switchboard_stun::{
    ChannelData, Class, Message, MessageBuilder, MessageType, Method, TransactionId,
    long_term_key_md5, stream_frame_len,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(5);

/// Settings for a test server on loopback, port 0 everywhere.
pub fn settings() -> TurnSettings {
    let mut s = TurnSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_listen: "127.0.0.1:0".parse().unwrap(),
        udp_sockets: 2,
        ..TurnSettings::default()
    };
    s.users.insert("alice".into(), "alice-pw".into());
    s
}

/// A mint for signaling peer `peer` from loopback, without a user.
pub fn mint_for(peer: Option<&str>) -> switchboard::ice::MintFor<'_> {
    switchboard::ice::MintFor {
        source: std::net::Ipv4Addr::LOCALHOST.into(),
        user: None,
        peer,
    }
}

pub struct Running {
    pub service: TurnService,
    /// Mints `ice_servers` for `service`, as the signaling side does.
    pub ice: switchboard::ice::IceServers,
    pub shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn start(settings: &TurnSettings, tls: Option<Arc<rustls::ServerConfig>>) -> Running {
    let shutdown = CancellationToken::new();
    let mut settings = settings.clone();
    switchboard::ice::ensure_rest_secret(&mut settings);
    let service = switchboard::turn::start(&settings, tls, shutdown.clone())
        .await
        .expect("TURN service starts");
    let local = switchboard::ice::LocalTurn::of(&service);
    let ice = switchboard::ice::IceServers::new(&settings, local).expect("a REST secret");
    Running {
        service,
        ice,
        shutdown,
    }
}

/// A self-signed certificate for "localhost": the server config and a
/// client config trusting it.
pub fn tls_pair() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

pub enum Conn {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream, Vec<u8>),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>, Vec<u8>),
}

impl Conn {
    pub async fn udp(server: SocketAddr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Conn::Udp(socket, server)
    }

    pub async fn tcp(server: SocketAddr) -> Self {
        Conn::Tcp(TcpStream::connect(server).await.unwrap(), Vec::new())
    }

    pub async fn tls(server: SocketAddr, client: Arc<rustls::ClientConfig>) -> Self {
        let tcp = TcpStream::connect(server).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .unwrap();
        Conn::Tls(Box::new(tls), Vec::new())
    }

    pub fn is_stream(&self) -> bool {
        !matches!(self, Conn::Udp(..))
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        match self {
            Conn::Udp(s, to) => {
                s.send_to(bytes, *to).await.unwrap();
            }
            Conn::Tcp(s, _) => s.write_all(bytes).await.unwrap(),
            Conn::Tls(s, _) => {
                s.write_all(bytes).await.unwrap();
                s.flush().await.unwrap();
            }
        }
    }

    /// The next message, or `None` after `WAIT` (or on a closed stream).
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        tokio::time::timeout(WAIT, self.recv_inner())
            .await
            .ok()
            .flatten()
    }

    async fn recv_inner(&mut self) -> Option<Vec<u8>> {
        match self {
            Conn::Udp(s, _) => {
                let mut buf = vec![0; 65536];
                let n = s.recv(&mut buf).await.ok()?;
                buf.truncate(n);
                Some(buf)
            }
            Conn::Tcp(s, pending) => read_frame(s, pending).await,
            Conn::Tls(s, pending) => read_frame(&mut **s, pending).await,
        }
    }
}

async fn read_frame<S: AsyncReadExt + Unpin>(s: &mut S, pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Ok(Some(len)) = stream_frame_len(pending)
            && pending.len() >= len
        {
            let rest = pending.split_off(len);
            return Some(std::mem::replace(pending, rest));
        }
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

pub struct TurnClient {
    pub conn: Conn,
    pub username: String,
    pub password: String,
    pub realm: String,
    pub nonce: Vec<u8>,
    tid: u32,
}

impl TurnClient {
    pub fn new(conn: Conn, username: &str, password: &str) -> Self {
        Self {
            conn,
            username: username.into(),
            password: password.into(),
            realm: String::new(),
            nonce: Vec::new(),
            tid: 0,
        }
    }

    fn next_tid(&mut self) -> TransactionId {
        self.tid += 1;
        let mut id = [0x5A; 12];
        id[8..].copy_from_slice(&self.tid.to_be_bytes());
        TransactionId::new(id)
    }

    pub fn key(&self) -> [u8; 16] {
        long_term_key_md5(&self.username, &self.realm, &self.password)
    }

    pub fn build(
        &mut self,
        ty: MessageType,
        signed: bool,
        fill: impl FnOnce(&mut MessageBuilder<'_>),
    ) -> Vec<u8> {
        let tid = self.next_tid();
        let key = self.key();
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(&mut buf, ty, tid);
        fill(&mut b);
        if signed {
            b.add_username(&self.username)
                .add_realm(&self.realm)
                .add_nonce(&self.nonce)
                .add_message_integrity(&key);
        }
        b.add_fingerprint();
        b.finish().unwrap().to_vec()
    }

    /// Sends a request and waits for the response to it (skipping
    /// indications and ChannelData that arrive meanwhile).
    pub async fn request(
        &mut self,
        method: Method,
        signed: bool,
        fill: impl FnOnce(&mut MessageBuilder<'_>),
    ) -> Vec<u8> {
        let req = self.build(MessageType::new(method, Class::Request), signed, fill);
        let tid = Message::parse(&req).unwrap().transaction_id();
        self.conn.send(&req).await;
        for _ in 0..100 {
            let answer = self
                .conn
                .recv()
                .await
                .expect("an answer before the timeout");
            if let Ok(msg) = Message::parse(&answer)
                && msg.transaction_id() == tid
            {
                return answer;
            }
        }
        panic!("no answer to {method:?}");
    }

    /// Signed request with the 401/438 dance done as needed.
    pub async fn ask(&mut self, method: Method, fill: impl Fn(&mut MessageBuilder<'_>)) -> Vec<u8> {
        let mut answer = self.request(method, !self.nonce.is_empty(), &fill).await;
        for _ in 0..2 {
            match error_code(&answer) {
                Some(401 | 438) if self.learn(&answer) => {
                    answer = self.request(method, true, &fill).await;
                }
                _ => break,
            }
        }
        answer
    }

    /// Learns REALM and NONCE; false when the answer had none (so retrying is pointless).
    fn learn(&mut self, answer: &[u8]) -> bool {
        let Ok(msg) = Message::parse(answer) else {
            return false;
        };
        let (Ok(Some(Realm(realm))), Ok(Some(Nonce(nonce)))) =
            (msg.get::<Realm>(), msg.get::<Nonce>())
        else {
            return false;
        };
        let fresh = self.nonce != nonce || self.realm != realm;
        self.realm = realm.to_owned();
        self.nonce = nonce.to_vec();
        fresh
    }

    pub async fn allocate(&mut self) -> Result<SocketAddr, u16> {
        let answer = self
            .ask(Method::ALLOCATE, |b| {
                b.add(&RequestedTransport::UDP);
            })
            .await;
        let msg = Message::parse(&answer).unwrap();
        if msg.class() != Class::SuccessResponse {
            return Err(error_code(&answer).unwrap_or(0));
        }
        msg.verify_message_integrity(&self.key())
            .expect("signed success");
        msg.verify_fingerprint().expect("fingerprint");
        Ok(msg.get::<XorRelayedAddress>().unwrap().unwrap().0)
    }

    pub async fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        let bytes = self.build(MessageType::SEND_INDICATION, false, |b| {
            b.add_xor_peer_address(peer).add_data(data);
        });
        self.conn.send(&bytes).await;
    }

    pub async fn channel_data(&mut self, channel: u16, data: &[u8]) {
        let mut bytes = Vec::new();
        let pad = self.conn.is_stream();
        ChannelData::new(channel, data)
            .unwrap()
            .encode(&mut bytes, pad);
        self.conn.send(&bytes).await;
    }
}

pub fn error_code(bytes: &[u8]) -> Option<u16> {
    Message::parse(bytes)
        .ok()?
        .get::<ErrorCode>()
        .ok()?
        .map(|e| e.code)
}

pub fn is_success(bytes: &[u8]) -> bool {
    Message::parse(bytes).is_ok_and(|m| m.class() == Class::SuccessResponse)
}

/// A UDP peer on loopback.
pub async fn peer() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

pub async fn peer_recv(peer: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0; 65536];
    let (n, from) = tokio::time::timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(n);
    Some((buf, from))
}

/// coturn's echo peer.
pub const PEER: &str = "turnutils_peer";

/// Whether `binary` is on the PATH.
pub fn have(binary: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(binary).is_file()))
}

/// turnutils_peer echoes every datagram; waits until it does.
pub async fn start_echo_peer() -> (tokio::process::Child, SocketAddr) {
    let port = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let child = tokio::process::Command::new(PEER)
        .args(["-L", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("turnutils_peer starts");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for _ in 0..100 {
        probe.send_to(b"ping", addr).await.unwrap();
        let mut buf = [0u8; 16];
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(50), probe.recv_from(&mut buf)).await
        {
            return (child, addr);
        }
    }
    panic!("turnutils_peer did not come up on {addr}");
}
