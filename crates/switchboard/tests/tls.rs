//! HTTPS and WSS beside plain HTTP, with a configured certificate and with a
//! self-signed development one.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use switchboard_testkit::{Server, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn client_config(ca_der: rustls::pki_types::CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der).expect("trust the test certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn tls_connect(
    addr: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("tcp connect");
    let name = ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
    )
    .await
    .expect("handshake timed out")
    .expect("TLS handshake with the configured certificate")
}

#[tokio::test]
async fn https_and_wss_with_a_configured_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let dir = std::env::temp_dir().join(format!("sb-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");

    let s = Server::start(
        BIN,
        &[],
        &[
            "--https-listen",
            "127.0.0.1:0",
            "--turn-tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert_path.to_str().expect("utf8"),
            "--tls-key",
            key_path.to_str().expect("utf8"),
        ],
    )
    .await;
    let https = s.ready["https"]
        .as_str()
        .expect("https is served")
        .to_string();
    assert!(
        s.ready["turn_tls"].is_string(),
        "TURN over TLS is served: {}",
        s.ready
    );
    let cfg = client_config(cert.cert.der().clone());

    // A plain HTTPS request.
    let mut tls = tls_connect(&https, cfg.clone()).await;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut resp = String::new();
    tokio::time::timeout(WAIT, tls.read_to_string(&mut resp))
        .await
        .expect("read timed out")
        .ok();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    // Secure WebSocket signaling.
    let tls = tls_connect(&https, cfg).await;
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/ws", tls)
        .await
        .expect("wss upgrade");
    let first = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("welcome timed out")
        .expect("a frame")
        .expect("no error");
    let Message::Text(text) = first else {
        panic!("expected text, got {first:?}")
    };
    let welcome: serde_json::Value = serde_json::from_str(text.as_str()).expect("json");
    assert_eq!(welcome["type"], "welcome");
    // turns: is offered once TLS is on.
    let urls = welcome["ice_servers"].to_string();
    assert!(urls.contains("turns:"), "{urls}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_self_signed_development_certificate() {
    let s = Server::start(
        BIN,
        &[],
        &[
            "--tls-self-signed",
            "--https-listen",
            "127.0.0.1:0",
            "--turn-tls-listen",
            "127.0.0.1:0",
        ],
    )
    .await;
    assert!(s.ready["https"].is_string(), "{}", s.ready);
    // Plain HTTP keeps working beside it.
    let (status, _) = switchboard_testkit::http_get(&s.http, "/healthz", &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_and_wss_outlives_the_header_timeout() {
    let s = Server::start(
        BIN,
        &[
            ("SWITCHBOARD_HTTP__TLS_HANDSHAKE_TIMEOUT_SECS", "1"),
            ("SWITCHBOARD_HTTP__HEADER_TIMEOUT_SECS", "1"),
            ("SWITCHBOARD_HTTP__IDLE_TIMEOUT_SECS", "1"),
        ],
        &["--tls-self-signed", "--https-listen", "127.0.0.1:0"],
    )
    .await;
    let https = s.ready["https"].as_str().expect("https").to_string();

    // A client that opens TCP and never says hello.
    let mut silent = tokio::net::TcpStream::connect(&https)
        .await
        .expect("connect");
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("the handshake deadline closes the connection");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");

    // A secure WebSocket, once up, is the application's, not the
    // handshake's or the header timeout's.
    let tls = tokio_rustls::TlsConnector::from(insecure_client())
        .connect(
            ServerName::try_from("localhost").expect("name"),
            tokio::net::TcpStream::connect(&https).await.expect("tcp"),
        )
        .await
        .expect("handshake");
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/ws", tls)
        .await
        .expect("wss upgrade");
    let welcome = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("welcome");
    assert!(matches!(welcome, Some(Ok(Message::Text(_)))), "{welcome:?}");
    let quiet = tokio::time::timeout(std::time::Duration::from_secs(3), ws.next()).await;
    assert!(
        quiet.is_err(),
        "the connection stays open and quiet: {quiet:?}"
    );
    ws.send(Message::text(r#"{"type":"join","room":"r","id":1}"#))
        .await
        .expect("still open");
    let joined = tokio::time::timeout(WAIT, ws.next()).await.expect("joined");
    assert!(
        matches!(&joined, Some(Ok(Message::Text(t))) if t.as_str().contains("joined")),
        "{joined:?}"
    );
}

/// Trusts any certificate: the self-signed one is made at the server's start.
fn insecure_client() -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth(),
    )
}

#[tokio::test]
async fn a_bad_certificate_path_is_a_clear_error_at_start() {
    let out = tokio::process::Command::new(BIN)
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--turn-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ])
        .output();
    let out = tokio::time::timeout(WAIT, out)
        .await
        .expect("exits")
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls.cert"), "{err}");
}

#[tokio::test]
async fn print_config_shows_the_effective_configuration() {
    let out = tokio::process::Command::new(BIN)
        .args(["--print-config", "--max-peers", "7"])
        .env("SWITCHBOARD_LIMITS__RATE_BURST", "33")
        .output();
    let out = tokio::time::timeout(WAIT, out)
        .await
        .expect("exits")
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("max_peers = 7"), "{text}");
    assert!(text.contains("rate_burst = 33"), "{text}");
    assert!(text.contains("[turn]"), "{text}");
    let bad = tokio::process::Command::new(BIN)
        .args(["--print-config"])
        .env("SWITCHBOARD_ROOMS__MAX_PEER", "3")
        .output();
    let bad = tokio::time::timeout(WAIT, bad)
        .await
        .expect("exits")
        .expect("runs");
    assert!(!bad.status.success(), "an unknown key must be refused");
}
