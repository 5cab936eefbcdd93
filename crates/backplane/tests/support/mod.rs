//! A real `redis-server` for the tests: on a free loopback port, no
//! persistence, killed on drop.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running redis-server.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    password: Option<String>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_on(free_port(), None)
    }

    /// Starts one that requires `password`.
    pub fn start_with_password(password: &str) -> Self {
        Self::start_on(free_port(), Some(password.to_owned()))
    }

    /// Starts one on `port` (a restart keeps the port the clients know).
    pub fn start_on(port: u16, password: Option<String>) -> Self {
        Self::spawn(port, password, &[])
    }

    /// Starts one that also serves TLS on the returned port, with the PEM
    /// files `cert` and `key` (its plain port answers the readiness PING).
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> (Self, u16) {
        let tls_port = free_port();
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let server = Self::spawn(
            free_port(),
            None,
            &[
                "--tls-port",
                &tls_port.to_string(),
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &cert,
                "--tls-auth-clients",
                "no",
            ],
        );
        (server, tls_port)
    }

    fn spawn(port: u16, password: Option<String>, extra: &[&str]) -> Self {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--loglevel",
            "warning",
        ]);
        if let Some(p) = &password {
            cmd.args(["--requirepass", p]);
        }
        cmd.args(extra);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let mut server = RedisServer {
            child: Some(child),
            port,
            password,
        };
        server.wait_ready();
        server
    }

    /// `redis://` URL of it, with the password if any.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for _ in 0..200 {
            if Instant::now() > deadline {
                break;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("redis-server exited: {status}");
            }
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on port {} never answered PING", self.port);
    }

    /// Whether it answers PING (or NOAUTH, when it wants a password).
    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(n) => buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"),
            Err(_) => false,
        }
    }

    /// Kills it (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
pub mod cluster;
