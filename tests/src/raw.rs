//! Receivers that misbehave below HTTP: raw `tokio` sockets that read a request and then
//! drop, reset, half-answer, stream forever or trickle; and a TLS server with a
//! self-signed certificate. Every server loop is bounded in time and stops when dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What a raw server does once it has read a whole request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Closes the connection without a byte of answer.
    Close,
    /// Resets the connection (RST, SO_LINGER 0) without a byte of answer.
    Reset,
    /// Writes part of the status line and headers, then closes.
    HalfHeaders,
    /// Writes a complete `200` head promising 1,000 bytes, sends 10, then closes.
    HalfBody,
    /// `200`, then a chunked body that never ends (until the client goes away, 30 s at most).
    EndlessBody,
    /// `200` head at once, then one body byte every `200 ms` (30 s at most).
    TrickleBody,
    /// The status line itself one byte every `200 ms`.
    TrickleHead,
}

/// Aborts the server task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A raw HTTP/1.1 server on 127.0.0.1 that misbehaves one way.
pub struct RawServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    _task: AbortOnDrop,
}

impl RawServer {
    pub async fn start(how: Misbehaviour) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let count = count.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(40),
                        serve_one(stream, how, count),
                    )
                    .await;
                });
            }
        });
        RawServer {
            addr,
            requests,
            _task: AbortOnDrop(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Whole requests read so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Reads one request (head and `content-length` body). `None` if the peer went away first.
pub async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf)
}

async fn serve_one(mut stream: TcpStream, how: Misbehaviour, count: Arc<AtomicUsize>) {
    // One request per connection: each misbehaviour ends the connection.
    if read_request(&mut stream).await.is_none() {
        return;
    }
    count.fetch_add(1, Ordering::SeqCst);
    match how {
        Misbehaviour::Close => {
            let _ = stream.shutdown().await;
        }
        Misbehaviour::Reset => {
            // Linger 0 makes the close an RST; it does not block (the deprecation's worry).
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            drop(stream);
        }
        Misbehaviour::HalfHeaders => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
            let _ = stream.flush().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Misbehaviour::HalfBody => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
                .await;
            let _ = stream.flush().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Misbehaviour::EndlessBody => endless(&mut stream).await,
        Misbehaviour::TrickleBody => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
                .await;
            trickle(&mut stream, &[b'x'; 1000]).await;
        }
        Misbehaviour::TrickleHead => {
            trickle(
                &mut stream,
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            )
            .await;
        }
    }
}

/// A chunked `200` that never ends: 16 KiB chunks until the peer goes away (30 s at most).
async fn endless<S: AsyncWrite + Unpin>(stream: &mut S) {
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
    if stream.write_all(head).await.is_err() {
        return;
    }
    let mut chunk = format!("{:x}\r\n", 16 * 1024).into_bytes();
    chunk.extend(std::iter::repeat_n(b'y', 16 * 1024));
    chunk.extend_from_slice(b"\r\n");
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if stream.write_all(&chunk).await.is_err() {
            return;
        }
    }
}

/// One byte every 200 ms until `bytes` are out or the peer goes away.
async fn trickle<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) {
    for b in bytes {
        if stream.write_all(&[*b]).await.is_err() || stream.flush().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An HTTPS server on 127.0.0.1 whose certificate (for `127.0.0.1` and `localhost`) is
/// self-signed: valid in every way except that no trusted authority issued it.
pub struct TlsServer {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    _task: AbortOnDrop,
}

impl TlsServer {
    pub async fn start() -> TlsServer {
        use tokio_rustls::rustls;
        let cert = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])
        .expect("self-signed certificate");
        let der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
        let key = rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der())
            .expect("private key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .expect("server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (handshakes, refused, requests) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let counters = (handshakes.clone(), refused.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let (handshakes, refused, requests) = counters.clone();
                tokio::spawn(async move {
                    let accepted =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await;
                    let Ok(Ok(mut tls)) = accepted else {
                        refused.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    handshakes.fetch_add(1, Ordering::SeqCst);
                    if read_request(&mut tls).await.is_some() {
                        requests.fetch_add(1, Ordering::SeqCst);
                        let _ = tls
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        TlsServer {
            addr,
            handshakes,
            refused,
            requests,
            _task: AbortOnDrop(task),
        }
    }

    /// `https://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("https://{}/hook", self.addr)
    }

    /// Handshakes that completed.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// Handshakes the client broke off (or that failed otherwise).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// HTTP requests that arrived over TLS.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}
