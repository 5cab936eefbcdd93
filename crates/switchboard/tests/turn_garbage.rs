//! Garbage on every transport never crashes or stalls the server: a valid
//! request right after still succeeds.

mod turn_support;

use std::time::Duration;

use switchboard_stun::Method;
use tokio::io::AsyncWriteExt;
use turn_support::*;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = (self.next() as usize) % max;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

async fn valid_binding_works(server: &Running) {
    let mut client = TurnClient::new(Conn::udp(server.service.local_udp().unwrap()).await, "", "");
    let answer = client.request(Method::BINDING, false, |_| {}).await;
    assert!(is_success(&answer));
    let mut client = TurnClient::new(
        Conn::tcp(server.service.local_tcp().unwrap()).await,
        "alice",
        "alice-pw",
    );
    client
        .allocate()
        .await
        .expect("allocation after the garbage");
}

#[tokio::test]
async fn garbage_datagrams() {
    let server = start(&settings(), None).await;
    let udp = server.service.local_udp().unwrap();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // A valid Allocate to truncate and mangle.
    let mut template = TurnClient::new(Conn::udp(udp).await, "alice", "alice-pw");
    let valid = template.build(
        switchboard_stun::MessageType::new(Method::ALLOCATE, switchboard_stun::Class::Request),
        true,
        |b| {
            b.add(&switchboard_stun::attr::RequestedTransport::UDP);
        },
    );
    for i in 0..3000 {
        let mut bytes = rng.bytes(600);
        match i % 4 {
            0 => bytes = valid[..(rng.next() as usize) % valid.len()].to_vec(),
            1 if !bytes.is_empty() => bytes[0] &= 0x3F,
            2 if bytes.len() >= 4 => {
                bytes[0] = 0x40; // ChannelData with a lying length
            }
            _ => {}
        }
        let _ = socket.send_to(&bytes, udp).await;
        if i % 200 == 0 {
            tokio::task::yield_now().await;
        }
    }
    valid_binding_works(&server).await;
}

#[tokio::test]
async fn garbage_streams() {
    let server = start(&settings(), None).await;
    let tcp = server.service.local_tcp().unwrap();
    let mut rng = XorShift(42);
    for i in 0..50 {
        let mut stream = tokio::net::TcpStream::connect(tcp).await.unwrap();
        let mut bytes = rng.bytes(3000);
        if i % 2 == 0 && bytes.len() > 4 {
            // A frame header promising more than ever comes: the server must
            // not wait on it forever while others are served.
            bytes.truncate(4);
            bytes[0] = 0x00;
            bytes[2] = 0xFF;
        }
        let _ = stream.write_all(&bytes).await;
        if i % 3 == 0 {
            drop(stream);
        } else {
            // Leave it half-open and let the next one come.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                drop(stream);
            });
        }
    }
    valid_binding_works(&server).await;
}
