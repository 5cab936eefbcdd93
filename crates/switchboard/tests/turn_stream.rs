//! TURN over TCP and TLS against hostile or departing clients: the
//! allocation deadline from accept, the cap per source address, and an
//! orderly close at shutdown.

mod turn_support;

use std::time::{Duration, Instant};

use switchboard_stun::{Class, Message, MessageBuilder, MessageType, Method, TransactionId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use turn_support::*;

fn binding_request(n: u32) -> Vec<u8> {
    let mut id = [0x11; 12];
    id[8..].copy_from_slice(&n.to_be_bytes());
    let mut buf = Vec::new();
    let b = MessageBuilder::new(
        &mut buf,
        MessageType::BINDING_REQUEST,
        TransactionId::new(id),
    );
    b.finish().unwrap().to_vec()
}

/// Reads until the peer closes: `Ok(bytes)` on an orderly end of stream,
/// `Err` on a reset or a timeout.
async fn read_to_end<S: AsyncReadExt + Unpin>(
    s: &mut S,
    limit: Duration,
) -> Result<Vec<u8>, String> {
    let mut all = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return Err(format!("still open after {limit:?}")),
            Ok(Err(e)) => return Err(format!("read failed: {e}")),
            Ok(Ok(0)) => return Ok(all),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// A client that trickles a byte at a time keeps a per-read timer happy
/// for ever; the deadline counts from accept.
#[tokio::test]
async fn a_trickling_client_without_an_allocation_is_closed_at_the_deadline() {
    let mut s = settings();
    s.allocate_within_secs = 2;
    let server = start(&s, None).await;
    let tcp = server.service.local_tcp().unwrap();
    let mut conn = TcpStream::connect(tcp).await.unwrap();
    let started = Instant::now();
    let request = binding_request(1);
    // One byte every 250 ms: the 20-byte request would take 5 s.
    let mut closed = false;
    for &byte in &request {
        if conn.write_all(&[byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(250), conn.read(&mut buf)).await
        {
            closed = true;
            break;
        }
    }
    let elapsed = started.elapsed();
    assert!(
        closed,
        "connection still open after {elapsed:?} without an allocation"
    );
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(4),
        "closed after {elapsed:?}"
    );
}

#[tokio::test]
async fn a_tls_handshake_that_never_finishes_counts_against_the_deadline() {
    let mut s = settings();
    s.allocate_within_secs = 2;
    let (server_tls, _) = tls_pair();
    let server = start(&s, Some(server_tls)).await;
    let mut conn = TcpStream::connect(server.service.local_tls().unwrap())
        .await
        .unwrap();
    let started = Instant::now();
    // Silence: no ClientHello ever comes.
    let end = read_to_end(&mut conn, Duration::from_secs(8)).await;
    let elapsed = started.elapsed();
    assert!(end.is_ok() || elapsed < Duration::from_secs(4), "{end:?}");
    assert!(elapsed < Duration::from_secs(4), "closed after {elapsed:?}");
}

/// A connection that has an allocation is not subject to the deadline.
#[tokio::test]
async fn an_allocated_connection_outlives_the_deadline() {
    let mut s = settings();
    s.allocate_within_secs = 1;
    let server = start(&s, None).await;
    let tcp = server.service.local_tcp().unwrap();
    let mut client = TurnClient::new(Conn::tcp(tcp).await, "alice", "alice-pw");
    client.allocate().await.expect("allocation");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let answer = client.request(Method::BINDING, false, |_| {}).await;
    assert!(is_success(&answer));
}

#[tokio::test]
async fn connections_per_source_are_capped() {
    let mut s = settings();
    s.max_connections_per_ip = 3;
    let server = start(&s, None).await;
    let tcp = server.service.local_tcp().unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = TurnClient::new(Conn::tcp(tcp).await, "alice", "alice-pw");
        let answer = c.request(Method::BINDING, false, |_| {}).await;
        assert!(is_success(&answer));
        held.push(c);
    }
    // The fourth is accepted by the kernel and closed by the server at once.
    let mut fourth = TcpStream::connect(tcp).await.unwrap();
    let _ = fourth.write_all(&binding_request(4)).await;
    let end = read_to_end(&mut fourth, WAIT).await;
    assert!(
        !end.as_ref().is_ok_and(|bytes| !bytes.is_empty()),
        "the fourth connection was served: {end:?}"
    );
    assert!(
        !matches!(&end, Err(e) if e.starts_with("still open")),
        "the fourth connection was kept open"
    );
    // One closes; a new one is served again (the slot comes back once the
    // server has seen the close).
    drop(held.pop());
    let mut served = false;
    for _ in 0..100 {
        let mut c = TcpStream::connect(tcp).await.unwrap();
        let _ = c.write_all(&binding_request(5)).await;
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), c.read(&mut buf)).await
            && n > 0
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "a freed slot was not given back");
}

/// At shutdown a TLS client with an allocation gets close_notify after its
/// last answer, not a bare TCP close.
#[tokio::test]
async fn shutdown_closes_tls_connections_with_close_notify() {
    let (server_tls, client_tls) = tls_pair();
    let server = start(&settings(), Some(server_tls)).await;
    let tls = server.service.local_tls().unwrap();
    let mut client = TurnClient::new(Conn::tls(tls, client_tls).await, "alice", "alice-pw");
    client.allocate().await.expect("allocation");
    server.shutdown.cancel();
    let Conn::Tls(stream, pending) = &mut client.conn else {
        unreachable!()
    };
    assert!(pending.is_empty());
    let end = read_to_end(&mut **stream, WAIT).await;
    assert_eq!(end, Ok(Vec::new()), "an orderly TLS close");
    tokio::time::timeout(Duration::from_secs(10), server.service.closed())
        .await
        .expect("the service ends after its connections");
}

/// At shutdown, what is queued for a stream client (relayed data it was
/// slow to read) is written before the close: every datagram the server
/// took for the client and did not drop arrives, then end of stream.
#[tokio::test]
async fn shutdown_writes_what_is_queued_for_a_stream_client() {
    use switchboard_stun::attr::Data;
    let mut s = settings();
    s.allowed_peer_ranges = vec!["127.0.0.0/8".into()];
    let server = start(&s, None).await;
    let svc = &server.service;
    // A small receive window, so that the kernel's buffers fill and the
    // rest waits in the server's queue for this client.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    let stream = socket.connect(svc.local_tcp().unwrap()).await.unwrap();
    let mut client = TurnClient::new(Conn::Tcp(stream, Vec::new()), "alice", "alice-pw");
    let relayed = client.allocate().await.expect("allocation");
    let peer = peer().await;
    let answer = client
        .ask(Method::CREATE_PERMISSION, |b| {
            b.add_xor_peer_address(peer.local_addr().unwrap());
        })
        .await;
    assert!(is_success(&answer));
    // The client does not read while 15 MB are relayed towards it: more
    // than the server's send buffer (4 MiB at most) and its queue (1 MiB).
    let datagram = vec![0x42u8; 30_000];
    for i in 0..500 {
        peer.send_to(&datagram, relayed).await.unwrap();
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert!(svc.send_failures() > 0, "the client's queue never filled");
    // Until the relay has handled every datagram sent.
    let mut last = (u64::MAX, u64::MAX);
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = (svc.metrics().packets_to_clients, svc.send_failures());
        if now == last {
            break;
        }
        last = now;
    }
    let expected = last.0 - last.1;
    server.shutdown.cancel();
    let Conn::Tcp(stream, mut pending) = client.conn else {
        unreachable!()
    };
    let mut stream = stream;
    let end = read_to_end(&mut stream, Duration::from_secs(10)).await;
    pending.extend_from_slice(&end.clone().unwrap_or_default());
    assert!(end.is_ok(), "{:?}", end.map(|b| b.len()));
    let mut delivered = 0u64;
    let mut at = 0;
    while at < pending.len() {
        let len = switchboard_stun::stream_frame_len(&pending[at..])
            .expect("framed")
            .expect("a whole frame");
        assert!(at + len <= pending.len(), "a frame cut short at the close");
        let msg = Message::parse(&pending[at..at + len]).expect("a message");
        if msg.get::<Data>().ok().flatten().is_some() {
            delivered += 1;
        }
        at += len;
    }
    assert_eq!(delivered, expected, "queued data lost at shutdown");
}

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// SIGTERM while a TCP client with an allocation keeps sending requests:
/// it gets its answers, then end of stream, not a reset; the process exits
/// cleanly and in time.
#[cfg(unix)]
#[tokio::test]
async fn sigterm_closes_tcp_turn_clients_in_order() {
    let mut s = switchboard_testkit::Server::start(
        BIN,
        &[("SWITCHBOARD_TURN__USERS__ALICE", "alice-pw")],
        &[],
    )
    .await;
    let tcp: std::net::SocketAddr = s.ready["turn_tcp"]
        .as_str()
        .expect("turn_tcp")
        .parse()
        .unwrap();
    let mut client = TurnClient::new(Conn::tcp(tcp).await, "alice", "alice-pw");
    client.allocate().await.expect("allocation");
    let Conn::Tcp(stream, pending) = client.conn else {
        unreachable!()
    };
    assert!(pending.is_empty());
    let (mut rd, mut wr) = stream.into_split();
    let stop = tokio_util::sync::CancellationToken::new();
    // Requests keep coming while the signal lands, so the server has input
    // in flight when it closes.
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut n = 0u32;
            // As fast as the server takes them (bounded in count and time):
            // unread input at close is what turns a close into a reset.
            while !stop.is_cancelled()
                && n < 5_000_000
                && started.elapsed() < Duration::from_secs(20)
            {
                let batch: Vec<u8> = (0..50).flat_map(|i| binding_request(n + i)).collect();
                n += 50;
                if wr.write_all(&batch).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            let _ = wr.shutdown().await;
        })
    };
    // Some answers first, so the stream is busy both ways.
    let mut first = [0u8; 1024];
    let n = tokio::time::timeout(WAIT, rd.read(&mut first))
        .await
        .expect("answers")
        .expect("read");
    assert!(n > 0);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let end = read_to_end(&mut rd, Duration::from_secs(10)).await;
    stop.cancel();
    let _ = writer.await;
    let mut rest = first[..n].to_vec();
    rest.extend_from_slice(&end.clone().unwrap_or_default());
    let end = end.map(|_| ());
    assert_eq!(end, Ok(()), "an orderly end of stream");
    // Every byte before the end belongs to whole answers.
    let mut at = 0;
    let mut answers = 0;
    while at < rest.len() {
        let len = switchboard_stun::stream_frame_len(&rest[at..])
            .expect("framed")
            .expect("a whole frame");
        assert!(at + len <= rest.len(), "a frame cut short at the close");
        let msg = Message::parse(&rest[at..at + len]).expect("an answer");
        assert_eq!(msg.class(), Class::SuccessResponse);
        at += len;
        answers += 1;
    }
    assert!(answers > 0);
    let exit = s
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exited in time");
    assert!(exit.success(), "exit status {exit:?}");
}
